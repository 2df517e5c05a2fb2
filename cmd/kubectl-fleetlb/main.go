// Command kubectl-fleetlb is the fleetlb kubectl plugin (`kubectl fleetlb
// ...` once on PATH): onboard a tenant cluster in one command and show the
// fleet at a glance. The logic is in internal/cli; this file wires flags.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"

	"github.com/fleetlb/fleetlb/internal/cli"
	"github.com/fleetlb/fleetlb/internal/version"
)

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	// The management cluster: kubectl's current context and its standard flags.
	mgmt := genericclioptions.NewConfigFlags(true)
	root := &cobra.Command{
		Use:           "kubectl-fleetlb",
		Short:         "Operate fleetlb from kubectl: onboard tenant clusters, see the fleet's state",
		SilenceUsage:  true,
		SilenceErrors: true,
		// Help reads as kubectl shows the plugin.
		Annotations: map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl fleetlb"},
		Version:     version.String(), // --version
	}
	mgmt.AddFlags(root.PersistentFlags())

	tenant := &cobra.Command{Use: "tenant", Short: "Manage tenant clusters"}
	add := &cli.TenantAdd{Management: mgmt, Out: os.Stdout}
	tenantFlags := genericclioptions.NewConfigFlags(false)
	var tenantKubeconfig, tenantContext string
	addCmd := &cobra.Command{
		Use:   "add NAME --pool POOL --tenant-kubeconfig FILE [--hostnames ...] [--group ...] [--node-cidrs ...]",
		Short: "Create or update a Tenant, wait until it is Ready, install the ccm in the tenant cluster and wait until it reports",
		Long: `Onboards a tenant cluster in one command, each step printed:
  1. applies the Tenant in the management cluster (the current context; server-side apply, so the flags given are its spec),
  2. waits until the manager reports it Ready,
  3. copies the kubeconfig the manager issued for the tenant's ccm into the tenant cluster (the Secret the ccm's Deployment mounts),
  4. installs the ccm there (RBAC and Deployment, from --manifest or the manifest compiled in),
  5. waits until the ccm reports the cluster's nodes (TenantNodes).
Running it again with the same flags changes nothing and succeeds.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			add.Name = args[0]
			if tenantKubeconfig == "" {
				return fmt.Errorf("--tenant-kubeconfig is required")
			}
			tenantFlags.KubeConfig, tenantFlags.Context = &tenantKubeconfig, &tenantContext
			add.Tenant = tenantFlags
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return add.Run(ctx)
		},
	}
	f := addCmd.Flags()
	f.StringSliceVar(&add.Hostnames, "hostnames", nil, "Hostnames the tenant may claim (exact names or wildcards like *.team-a.example.com); comma-separated or repeated.")
	f.StringVar(&add.Pool, "pool", "", "AddressPool the tenant's VIPs come from (required).")
	f.StringVar(&add.Group, "group", "", "Tenant group: tenants of one group may share hostnames and global names.")
	f.StringSliceVar(&add.NodeCIDRs, "node-cidrs", nil, "Where the tenant's nodes are (CIDRs); none means no node is sent traffic.")
	f.StringVar(&tenantKubeconfig, "tenant-kubeconfig", "", "Kubeconfig of the tenant cluster (required).")
	f.StringVar(&tenantContext, "tenant-context", "", "Context in --tenant-kubeconfig (default: its current context).")
	f.StringVar(&add.ClusterName, "cluster-name", "", "The tenant cluster's name given to its ccm (default: the tenant's name).")
	f.StringVar(&add.Manifest, "manifest", "", "The ccm's install manifest (YAML); default: the one compiled into the plugin.")
	f.StringVar(&add.Image, "image", "", "The ccm's image, replacing the manifest's.")
	f.DurationVar(&add.Timeout, "timeout", 2*time.Minute, "How long to wait for the Tenant to be Ready, and for the ccm to report.")
	tenant.AddCommand(addCmd)

	status := &cli.Status{Management: mgmt, Out: os.Stdout}
	statusCmd := &cobra.Command{
		Use:   "status",
		Short: "Print the fleet at a glance: proxies and versions, NACKs, objects not Programmed and why, pool usage, tenants",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return status.Run(cmd.Context()) },
	}
	root.AddCommand(tenant, statusCmd)
	return root
}
