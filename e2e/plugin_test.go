package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/testenv"
)

var (
	pluginOnce sync.Once
	pluginBin  string
	pluginErr  error
)

// plugin builds kubectl-fleetlb once per test process.
func plugin(t *testing.T) string {
	t.Helper()
	pluginOnce.Do(func() {
		root, err := testenv.ModuleRoot()
		if err != nil {
			pluginErr = err
			return
		}
		pluginBin = filepath.Join(t.TempDir(), "kubectl-fleetlb")
		cmd := exec.Command("go", "build", "-o", pluginBin, "./cmd/kubectl-fleetlb")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			pluginErr = fmt.Errorf("building kubectl-fleetlb: %v\n%s", err, out)
		}
	})
	if pluginErr != nil {
		t.Fatal(pluginErr)
	}
	return pluginBin
}

// runPlugin runs kubectl-fleetlb and returns its output and error.
func runPlugin(ctx context.Context, bin string, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// TestPluginOnboardsATenant drives `kubectl fleetlb tenant add` against real
// control planes: the Tenant is created and Ready, the ccm's kubeconfig and
// Deployment land in the tenant cluster, the ccm (started as a process with
// the kubeconfig the plugin installed, as the Deployment would run it)
// reports its nodes, and a Service gets an address. A second run changes
// nothing; a failing run names its step; `status` shows the fleet.
func TestPluginOnboardsATenant(t *testing.T) {
	h := newHarness(t)
	bin := plugin(t)
	f := check(h.StartFleet("127.0.65.1-127.0.65.8"))(t)
	check(f.StartProxy(false))(t)
	tc := check(f.StartTenantCluster("team-p"))(t)
	if err := tc.AddNode("p-1", "127.0.66.1", "z1"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mgmtKC := f.Mgmt.Kubeconfig
	add := []string{"--kubeconfig", mgmtKC, "tenant", "add", "team-p", "--pool", "vips",
		"--hostnames", "*.team-p.example.com", "--node-cidrs", "127.0.0.0/17",
		"--tenant-kubeconfig", tc.Env.Kubeconfig, "--timeout", "60s"}

	// The plugin waits for the ccm to report; meanwhile the ccm starts from
	// the Secret the plugin put into the tenant cluster.
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := runPlugin(ctx, bin, add...)
		done <- result{out, err}
	}()
	var installed corev1.Secret
	eventually(t, "the ccm's management kubeconfig Secret in the tenant cluster", 60*time.Second, func() error {
		if err := tc.Env.Client.Get(ctx, client.ObjectKey{Namespace: "fleetlb-system", Name: "fleetlb-management-kubeconfig"}, &installed); err != nil {
			return err
		}
		if len(installed.Data[v1.KubeconfigKey]) == 0 {
			return fmt.Errorf("no kubeconfig in it")
		}
		return nil
	})
	if err := tc.StartCCM(installed.Data[v1.KubeconfigKey]); err != nil {
		t.Fatal(err)
	}
	first := <-done
	t.Logf("first run:\n%s", first.out)
	if first.err != nil {
		t.Fatalf("tenant add: %v", first.err)
	}
	for _, want := range []string{
		"[1/5] apply the Tenant: tenant team-p created",
		"[2/5] wait for the Tenant to be Ready: tenant team-p is Ready (namespace tenant-team-p)",
		"[3/5] copy the ccm kubeconfig into the tenant cluster: Secret fleetlb-system/fleetlb-management-kubeconfig created",
		"[4/5] install the ccm: Deployment fleetlb-system/fleetlb-ccm created",
		"[5/5] wait for the ccm to report its nodes: the ccm of cluster team-p reported 1 nodes (1 served, 0 refused)",
		"tenant team-p is onboarded",
	} {
		if !strings.Contains(first.out, want) {
			t.Errorf("first run does not say %q", want)
		}
	}
	var tnt v1.Tenant
	if err := f.Mgmt.Client.Get(ctx, client.ObjectKey{Name: "team-p"}, &tnt); err != nil {
		t.Fatal(err)
	}
	if tnt.Spec.AddressPool != "vips" || len(tnt.Spec.Hostnames) != 1 || tnt.Spec.Hostnames[0] != "*.team-p.example.com" ||
		len(tnt.Spec.NodeCIDRs) != 1 || tnt.Spec.NodeCIDRs[0] != "127.0.0.0/17" {
		t.Errorf("Tenant spec %+v", tnt.Spec)
	}
	var dep appsv1.Deployment
	if err := tc.Env.Client.Get(ctx, client.ObjectKey{Namespace: "fleetlb-system", Name: "fleetlb-ccm"}, &dep); err != nil {
		t.Fatal(err)
	}
	if args := strings.Join(dep.Spec.Template.Spec.Containers[0].Args, " "); !strings.Contains(args, "--cluster-name=team-p") {
		t.Errorf("the installed ccm runs with %s", args)
	}

	// Idempotent: the same command again changes nothing and succeeds.
	tenantRV, depRV, secretRV := tnt.ResourceVersion, dep.ResourceVersion, installed.ResourceVersion
	second, err := runPlugin(ctx, bin, add...)
	t.Logf("second run:\n%s", second)
	if err != nil {
		t.Fatalf("second tenant add: %v", err)
	}
	for _, want := range []string{"tenant team-p unchanged", "Secret fleetlb-system/fleetlb-management-kubeconfig unchanged", "objects applied, 0 changed", "tenant team-p is onboarded"} {
		if !strings.Contains(second, want) {
			t.Errorf("second run does not say %q", want)
		}
	}
	if err := f.Mgmt.Client.Get(ctx, client.ObjectKey{Name: "team-p"}, &tnt); err != nil {
		t.Fatal(err)
	}
	if err := tc.Env.Client.Get(ctx, client.ObjectKeyFromObject(&dep), &dep); err != nil {
		t.Fatal(err)
	}
	if err := tc.Env.Client.Get(ctx, client.ObjectKeyFromObject(&installed), &installed); err != nil {
		t.Fatal(err)
	}
	if tnt.ResourceVersion != tenantRV || dep.ResourceVersion != depRV || installed.ResourceVersion != secretRV {
		t.Errorf("the second run rewrote objects: Tenant %s→%s, Deployment %s→%s, Secret %s→%s",
			tenantRV, tnt.ResourceVersion, depRV, dep.ResourceVersion, secretRV, installed.ResourceVersion)
	}

	// The onboarded tenant works: a Service gets an address from the pool.
	if err := tc.Env.Client.Create(ctx, loadBalancerService("web", corev1.ServicePort{Port: 80, Protocol: corev1.ProtocolTCP})); err != nil {
		t.Fatal(err)
	}
	vip := waitAddress(t, tc, "web")
	if err := tc.ServeNodePorts("default", "web", map[string]string{"p-1": "127.0.66.1"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "traffic through the VIP", 30*time.Second, func() error {
		id, err := dialIdentity(vip.String() + ":80")
		if err != nil {
			return err
		}
		if id.Cluster != "team-p" || id.Node != "p-1" {
			return fmt.Errorf("answered by %+v", id)
		}
		return nil
	})
	// And one it cannot have: an address outside every pool.
	refused := loadBalancerService("refused", corev1.ServicePort{Port: 81, Protocol: corev1.ProtocolTCP})
	refused.Annotations = map[string]string{v1.AnnotationLoadBalancerIP: "127.0.67.1"}
	if err := tc.Env.Client.Create(ctx, refused); err != nil {
		t.Fatal(err)
	}

	// status: the fleet's proxy and version, the refused object and why, the pool, the tenant.
	var fleet v1.ProxyFleet
	if err := f.Mgmt.Client.Get(ctx, client.ObjectKey{Name: v1.DefaultFleetName}, &fleet); err != nil || len(fleet.Status.Addresses) == 0 {
		t.Fatalf("default fleet %+v: %v", fleet.Status, err)
	}
	fleetVIP := string(fleet.Status.Addresses[0].IP)
	var status string
	eventually(t, "kubectl fleetlb status", 30*time.Second, func() error {
		status, err = runPlugin(ctx, bin, "--kubeconfig", mgmtKC, "status")
		if err != nil {
			return fmt.Errorf("%v: %s", err, status)
		}
		for _, want := range []string{
			"NOT PROGRAMMED: 1 of 2 LoadBalancers and Routes",
			"NACKS: 0 objects",
		} {
			if !strings.Contains(status, want) {
				return fmt.Errorf("status does not say %q:\n%s", want, status)
			}
		}
		for _, row := range [][]string{
			{"default", fleetVIP, " 1 ", "True", "all 1 connected proxies acknowledged version"},
			{"LoadBalancer", "tenant-team-p", "Accepted=False", v1.ReasonAddressNotAvailable},
			{"vips", " 2 ", " 6 ", "25%", "True"},
			{"team-p", "vips", " 2 ", " 0 ", " 1 ", " 1 ", " 1 ", "True"}, // LBs, routes, admitted, refused, addresses
		} {
			if !hasRow(status, row...) {
				return fmt.Errorf("status has no row with %q:\n%s", row, status)
			}
		}
		return nil
	})
	t.Logf("status:\n%s", status)

	// A failing run names the step that failed, and what the object said last.
	out, err := runPlugin(ctx, bin, "--kubeconfig", mgmtKC, "tenant", "add", "team-q", "--pool", "no-such-pool",
		"--tenant-kubeconfig", tc.Env.Kubeconfig, "--timeout", "5s")
	t.Logf("failing run:\n%s", out)
	if err == nil || !strings.Contains(out, `step "wait for the Tenant to be Ready" failed`) || !strings.Contains(out, v1.ReasonPoolNotFound) {
		t.Errorf("a Tenant whose pool does not exist: want the Ready step to fail with %s, got %v", v1.ReasonPoolNotFound, err)
	}
}

// hasRow reports whether one line of out contains every cell, in order.
func hasRow(out string, cells ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		rest, ok := line, true
		for _, c := range cells {
			i := strings.Index(rest, c)
			if i < 0 {
				ok = false
				break
			}
			rest = rest[i+len(c):]
		}
		if ok {
			return true
		}
	}
	return false
}
