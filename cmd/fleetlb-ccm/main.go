// Command fleetlb-ccm runs in a tenant cluster: it reports the cluster's
// LoadBalancer Services and Nodes to the tenant's namespace in the management
// cluster and copies the addresses back.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/fleetlb/fleetlb/ccm/credentials"
	"github.com/fleetlb/fleetlb/ccm/gateway"
	"github.com/fleetlb/fleetlb/ccm/ingress"
	"github.com/fleetlb/fleetlb/ccm/nodes"
	"github.com/fleetlb/fleetlb/ccm/secrets"
	"github.com/fleetlb/fleetlb/ccm/service"
	"github.com/fleetlb/fleetlb/internal/scheme"
	"github.com/fleetlb/fleetlb/internal/version"
)

type options struct {
	qps                                             float64
	burst                                           int
	mgmtKubeconfig, clusterName, class, addressType string
	ingressClass, gatewayClass                      string
	serveUnclassed, leaderElect                     bool
	leaderNS, metricsAddr, probeAddr                string
	tokenFile, persistKubeconfig                    string
	pprofAddr                                       string
	serviceWorkers                                  int
}

func main() {
	var o options
	flag.StringVar(&o.mgmtKubeconfig, "management-kubeconfig", "", "Kubeconfig for the tenant's namespace in the management cluster (the Secret fleetlb-ccm-kubeconfig made by the manager); required. Its context's namespace is used.")
	flag.StringVar(&o.tokenFile, "management-token-file", "", "File where the ccm keeps its current management token, renewed from the manager's kubeconfig Secret before it expires (default: a file in a new temporary directory).")
	flag.StringVar(&o.persistKubeconfig, "management-kubeconfig-secret", "", "namespace/name of the tenant-cluster Secret that --management-kubeconfig is mounted from; the ccm stores each renewed kubeconfig there (key \"kubeconfig\") so a restart starts with a valid token. Empty: not stored.")
	flag.StringVar(&o.clusterName, "cluster-name", "", "This tenant cluster's name, recorded on every object (required).")
	flag.StringVar(&o.class, "load-balancer-class", service.DefaultClass, "spec.loadBalancerClass of the Services to serve.")
	flag.StringVar(&o.ingressClass, "ingress-class", ingress.DefaultClass, "IngressClass served (created with controller "+ingress.ControllerName+" when missing).")
	flag.StringVar(&o.gatewayClass, "gateway-class", gateway.DefaultClass, "GatewayClass served (created with controllerName "+string(gateway.ControllerName)+" when missing); the Gateway API controllers run when its CRDs are installed.")
	flag.BoolVar(&o.serveUnclassed, "default-class", false, "Also serve Services without a loadBalancerClass (be the cluster's default load balancer).")
	flag.StringVar(&o.addressType, "node-address-type", string(corev1.NodeInternalIP), "Node address type the fleet sends traffic to (InternalIP or ExternalIP).")
	flag.BoolVar(&o.leaderElect, "leader-elect", true, "Elect a leader among replicas.")
	flag.StringVar(&o.leaderNS, "leader-election-namespace", "", "Namespace of the leader-election Lease in the tenant cluster.")
	flag.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", "Address of the Prometheus /metrics endpoint (\"0\" disables it).")
	flag.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz endpoints.")
	flag.Float64Var(&o.qps, "kube-api-qps", 100, "Requests per second to the Kubernetes API (client-side limit).")
	flag.IntVar(&o.burst, "kube-api-burst", 200, "Burst of requests to the Kubernetes API.")
	flag.IntVar(&o.serviceWorkers, "service-workers", service.DefaultWorkers, "Services reconciled at once (each waits on round trips to the management cluster).")
	flag.StringVar(&o.pprofAddr, "pprof-address", "", "Address of net/http/pprof (/debug/pprof/), on its own listener; empty disables it. Keep it on loopback.")
	showVersion := flag.Bool("version", false, "Print the version and exit.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage: fleetlb-ccm [flags]\n\nRuns in a tenant cluster (uses --kubeconfig or the in-cluster config for it).\n\nFlags:\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *showVersion {
		fmt.Println("fleetlb-ccm", version.String())
		return
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	ctrl.Log.Info("starting fleetlb-ccm", "version", version.Version, "revision", version.Revision)
	if err := run(o); err != nil {
		ctrl.Log.Error(err, "exiting")
		os.Exit(1)
	}
}

func run(o options) error {
	if o.mgmtKubeconfig == "" || o.clusterName == "" {
		return fmt.Errorf("--management-kubeconfig and --cluster-name are required")
	}
	at := corev1.NodeAddressType(o.addressType)
	if at != corev1.NodeInternalIP && at != corev1.NodeExternalIP {
		return fmt.Errorf("--node-address-type %q: use InternalIP or ExternalIP", o.addressType)
	}
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: o.mgmtKubeconfig}, &clientcmd.ConfigOverrides{})
	mgmtCfg, err := loader.ClientConfig()
	if err != nil {
		return fmt.Errorf("--management-kubeconfig: %w", err)
	}
	ns, _, err := loader.Namespace()
	if err != nil || ns == "" || ns == "default" {
		return fmt.Errorf("--management-kubeconfig must name the tenant namespace in its context (got %q, %v)", ns, err)
	}
	mgmtCfg.QPS, mgmtCfg.Burst = float32(o.qps), o.burst
	var persist *types.NamespacedName
	if o.persistKubeconfig != "" {
		pns, pname, ok := strings.Cut(o.persistKubeconfig, "/")
		if !ok || pns == "" || pname == "" {
			return fmt.Errorf("--management-kubeconfig-secret %q: use namespace/name", o.persistKubeconfig)
		}
		persist = &types.NamespacedName{Namespace: pns, Name: pname}
	}
	// The management token is short-lived: the client reads it from a file
	// that the credentials controller renews.
	renew := mgmtCfg.BearerToken != ""
	if renew {
		if o.tokenFile == "" {
			dir, err := os.MkdirTemp("", "fleetlb-ccm-")
			if err != nil {
				return err
			}
			o.tokenFile = filepath.Join(dir, "token")
		}
		if _, err := credentials.WriteFile(o.tokenFile, []byte(mgmtCfg.BearerToken)); err != nil {
			return fmt.Errorf("--management-token-file: %w", err)
		}
		mgmtCfg.BearerTokenFile = o.tokenFile
	} else {
		ctrl.Log.Info("the management kubeconfig has no bearer token: it is used as is and not renewed")
	}
	tenantCfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("tenant cluster config: %w", err)
	}
	tenantCfg.QPS, tenantCfg.Burst = float32(o.qps), o.burst
	s := scheme.New()
	if err := gwv1.Install(s); err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(tenantCfg, ctrl.Options{
		Scheme: s, Metrics: metricsserver.Options{BindAddress: o.metricsAddr}, HealthProbeBindAddress: o.probeAddr, PprofBindAddress: o.pprofAddr,
		LeaderElection: o.leaderElect, LeaderElectionID: "fleetlb-ccm.fleetlb.io", LeaderElectionNamespace: o.leaderNS,
	})
	if err != nil {
		return err
	}
	// The ccm may read only its own namespace of the management cluster.
	mgmt, err := cluster.New(mgmtCfg, func(co *cluster.Options) {
		co.Scheme = s
		co.Cache.DefaultNamespaces = map[string]cache.Config{ns: {}}
	})
	if err != nil {
		return err
	}
	if err := mgr.Add(mgmt); err != nil {
		return err
	}
	if renew {
		if err := (&credentials.Reconciler{Mgmt: mgmt.GetClient(), Namespace: ns, TokenFile: o.tokenFile,
			TenantReader: mgr.GetAPIReader(), TenantWriter: mgr.GetClient(), Persist: persist, Log: ctrl.Log.WithName("credentials")}).
			SetupWithManager(mgr, mgmt); err != nil {
			return err
		}
	}
	if err := (&service.Reconciler{
		Tenant: mgr.GetClient(), Mgmt: mgmt.GetClient(), Namespace: ns, ClusterName: o.clusterName,
		Class: o.class, ServeUnclassed: o.serveUnclassed, Recorder: mgr.GetEventRecorder("fleetlb-ccm"), Workers: o.serviceWorkers,
	}).SetupWithManager(mgr, mgmt); err != nil {
		return err
	}
	if err := (&nodes.Reconciler{Tenant: mgr.GetClient(), Mgmt: mgmt.GetClient(), Namespace: ns, ClusterName: o.clusterName, AddressType: at,
		Recorder: mgr.GetEventRecorder("fleetlb-ccm")}).
		SetupWithManager(mgr, mgmt); err != nil {
		return err
	}
	ctx := ctrl.SetupSignalHandler()
	rec := mgr.GetEventRecorder("fleetlb-ccm")
	if err := (&ingress.Reconciler{Tenant: mgr.GetClient(), Mgmt: mgmt.GetClient(), Namespace: ns, ClusterName: o.clusterName, Class: o.ingressClass, Recorder: rec}).
		SetupWithManager(ctx, mgr, mgmt); err != nil {
		return err
	}
	companions := &ingress.CompanionReconciler{Tenant: mgr.GetClient(), Class: o.ingressClass, Recorder: rec}
	secretReferrers := []secrets.Referrer{ingress.SecretReferrer(o.ingressClass)}
	gatewayAPI, err := gateway.Installed(mgr)
	if err != nil {
		return fmt.Errorf("discovering the Gateway API: %w", err)
	}
	if gatewayAPI {
		gw := &gateway.Controllers{Tenant: mgr.GetClient(), Mgmt: mgmt.GetClient(), Namespace: ns, ClusterName: o.clusterName, Class: o.gatewayClass, Recorder: rec}
		if err := gw.SetupWithManager(ctx, mgr, mgmt); err != nil {
			return err
		}
		companions.Referrers = gw.ServiceReferrers()
		secretReferrers = append(secretReferrers, gw.SecretReferrer(mgr.GetClient()))
	} else {
		ctrl.Log.Info("the Gateway API is not installed in this cluster: Gateway controllers are off")
	}
	if err := companions.SetupWithManager(ctx, mgr); err != nil {
		return err
	}
	if err := (&ingress.CompanionSlicesReconciler{Tenant: mgr.GetClient()}).SetupWithManager(mgr); err != nil {
		return err
	}
	// Tenant Secrets are read directly, never cached: only referenced ones are copied.
	if err := (&secrets.Reconciler{Tenant: mgr.GetAPIReader(), Mgmt: mgmt.GetClient(), Namespace: ns, Recorder: rec}).
		SetupWithManager(ctx, mgr, mgmt, secretReferrers...); err != nil {
		return err
	}
	if err := mgr.Add(ingress.EnsureClass(mgr.GetClient(), o.ingressClass)); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	return mgr.Start(ctx)
}
