// Command fleetlb-manager runs in the management cluster: tenant onboarding,
// LoadBalancer admission and IPAM, and the xDS server of the proxy fleets.
package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/fleetlb/fleetlb/envoy/server"
	"github.com/fleetlb/fleetlb/internal/memlimit"
	"github.com/fleetlb/fleetlb/internal/scheme"
	"github.com/fleetlb/fleetlb/internal/version"
	"github.com/fleetlb/fleetlb/internal/xdstransport"
	"github.com/fleetlb/fleetlb/manager/admission"
	"github.com/fleetlb/fleetlb/manager/backends"
	"github.com/fleetlb/fleetlb/manager/certs"
	"github.com/fleetlb/fleetlb/manager/dns"
	"github.com/fleetlb/fleetlb/manager/fleet"
	"github.com/fleetlb/fleetlb/manager/nodes"
	"github.com/fleetlb/fleetlb/manager/route"
	"github.com/fleetlb/fleetlb/manager/serving"
	"github.com/fleetlb/fleetlb/manager/snapshot"
	"github.com/fleetlb/fleetlb/manager/statusmetrics"
	"github.com/fleetlb/fleetlb/manager/tenant"
	"github.com/fleetlb/fleetlb/manager/xdscerts"
	"github.com/fleetlb/fleetlb/manager/xdsreport"
)

// options are the command line.
type options struct {
	qps                             float64
	burst, statusWorkers            int
	snapshotInterval                time.Duration
	xdsAddr, metricsAddr, probeAddr string
	leaderElect                     bool
	replica                         string
	leaderNS                        string
	tenantServer, tenantCA          string
	tokenTTL, debounce, maxDelay    time.Duration
	backendDeny                     string
	quarantine                      time.Duration
	claimGrace                      time.Duration
	fleet                           fleetOptions
	xdsInsecure                     bool
	xdsCertHosts                    string
	pprofAddr                       string
	admissionWorkers                int
	memoryLimitFraction             float64
}

func main() {
	var o options
	flag.StringVar(&o.xdsAddr, "xds-address", ":18000", "Address the xDS (ADS) gRPC server listens on; every replica serves it.")
	flag.BoolVar(&o.xdsInsecure, "xds-insecure", false, "Serve xDS in plaintext and trust the node.cluster proxies claim (any client can read every fleet's configuration, TLS keys included). Default: mutual TLS, the fleet comes from the client certificate.")
	flag.StringVar(&o.xdsCertHosts, "xds-certificate-hosts", "", "Comma-separated extra DNS names and IP addresses of the xDS serving certificate (it always names the host of --fleet-xds-address and fleetlb-manager.<fleet-namespace>.svc).")
	flag.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", "Address of the Prometheus /metrics endpoint (\"0\" disables it).")
	flag.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz endpoints.")
	flag.StringVar(&o.replica, "replica-name", "", "This replica's name in the xDS report Lease through which the leader learns what the proxies connected to other replicas acknowledged (default: $POD_NAME, else the host name).")
	flag.BoolVar(&o.leaderElect, "leader-elect", true, "Elect a leader among replicas; only the leader runs controllers and writes status.")
	flag.StringVar(&o.leaderNS, "leader-election-namespace", "", "Namespace of the leader-election Lease (default: the in-cluster namespace).")
	flag.StringVar(&o.tenantServer, "tenant-api-server", "", "Management API server URL written into tenant kubeconfigs (required).")
	flag.StringVar(&o.tenantCA, "tenant-api-ca-file", "", "PEM CA bundle that verifies --tenant-api-server, written into tenant kubeconfigs.")
	flag.DurationVar(&o.tokenTTL, "tenant-token-ttl", time.Hour, "Lifetime of ccm tokens; renewed after two thirds of it (minimum 10m).")
	flag.DurationVar(&o.quarantine, "address-quarantine", 10*time.Minute, "A released VIP waits this long before another tenant group may get it (the group that released it may take it back at once); 0 disables.")
	flag.DurationVar(&o.claimGrace, "hostname-claim-grace", route.DefaultClaimGrace, "How long a tenant's hostname claim outlives its last Route: it still blocks other tenants and keeps its age if claimed again.")
	flag.DurationVar(&o.debounce, "xds-debounce", 100*time.Millisecond, "Coalesce configuration changes that follow one another within this window (a change after a quiet window is applied at once).")
	flag.DurationVar(&o.maxDelay, "xds-max-delay", time.Second, "Never delay a configuration change longer than this.")
	flag.Float64Var(&o.qps, "kube-api-qps", 500, "Requests per second to the Kubernetes API (client-side limit, shared by every controller). "+
		"Sized for bulk status: one ACK can make thousands of objects Programmed, written --status-workers at a time, next to admission's writes; "+
		"at 500/s 10,000 objects take about 20 s of the budget. Reads come from the informer cache and do not count.")
	flag.IntVar(&o.burst, "kube-api-burst", 1000, "Burst of requests to the Kubernetes API above --kube-api-qps (absorbs one burst of Programmed writes of ~1,000 objects).")
	flag.DurationVar(&o.snapshotInterval, "snapshot-reconcile-interval", snapshot.DefaultReconcileInterval, "During a burst of events, a fleet's snapshot is rebuilt at most once per this interval (after a few at once; a lone change, its status and its ACK are never held back). Negative: not paced.")
	flag.IntVar(&o.statusWorkers, "status-workers", snapshot.DefaultStatusWorkers, "Programmed conditions written at once by the status writer (a queue off the snapshot reconcile: latest condition per object, failed writes retried with backoff; bounded by --kube-api-qps).")
	flag.IntVar(&o.admissionWorkers, "admission-workers", admission.DefaultWorkers, "LoadBalancers admitted at once, and as many Routes (each admission waits on its status write; the address allocator itself is locked).")
	flag.Float64Var(&o.memoryLimitFraction, "memory-limit-fraction", 0.9, "Soft memory limit of the Go runtime as a fraction of the container's memory limit (cgroup): near it the garbage collector runs more often rather than the pod being killed at a burst's peak. 0 disables it; GOMEMLIMIT, when set, wins.")
	flag.StringVar(&o.pprofAddr, "pprof-address", "", "Address of net/http/pprof (/debug/pprof/), on its own listener; empty disables it. Keep it on loopback.")
	flag.StringVar(&o.backendDeny, "backend-deny-cidrs", backends.FormatPrefixes(backends.DefaultDeny),
		"Comma-separated CIDRs no tenant node address may be in; add the management cluster's pod, Service and node networks. Every AddressPool range and every fleet address are always added (\"\" adds nothing more).")
	o.fleet.bind(flag.CommandLine)
	showVersion := flag.Bool("version", false, "Print the version and exit.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage: fleetlb-manager [flags]\n\nRuns in the management cluster (uses --kubeconfig or the in-cluster config).\n\nFlags:\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *showVersion {
		fmt.Println("fleetlb-manager", version.String())
		return
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	ctrl.Log.Info("starting fleetlb-manager", "version", version.Version, "revision", version.Revision)
	if err := run(o); err != nil {
		ctrl.Log.Error(err, "exiting")
		os.Exit(1)
	}
}

func run(o options) error {
	log := ctrl.Log.WithName("fleetlb-manager")
	if o.memoryLimitFraction > 0 && o.memoryLimitFraction < 1 {
		if soft := memlimit.Set(o.memoryLimitFraction); soft > 0 {
			log.Info("soft memory limit from the container's", "MiB", soft>>20)
		}
	}
	if o.tenantServer == "" {
		return fmt.Errorf("--tenant-api-server is required: the URL tenant ccms use to reach this management cluster")
	}
	var ca []byte
	if o.tenantCA != "" {
		var err error
		if ca, err = os.ReadFile(o.tenantCA); err != nil {
			return fmt.Errorf("--tenant-api-ca-file: %w", err)
		}
	}
	deny, err := backends.ParsePrefixes(o.backendDeny)
	if err != nil {
		return fmt.Errorf("--backend-deny-cidrs: %w", err)
	}
	deny = append([]netip.Prefix{}, deny...) // empty, not nil: nil would mean the default
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("management cluster config: %w", err)
	}
	if ca == nil {
		ca = cfg.CAData
	}
	if ca == nil && cfg.CAFile != "" {
		// In-cluster configs name the CA by file: tenant kubeconfigs still need its bytes.
		if ca, err = os.ReadFile(cfg.CAFile); err != nil {
			return fmt.Errorf("management cluster CA %s: %w", cfg.CAFile, err)
		}
	}
	cfg.QPS, cfg.Burst = float32(o.qps), o.burst
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme.New(),
		Metrics:                 metricsserver.Options{BindAddress: o.metricsAddr},
		Cache:                   o.fleet.cacheOptions(),
		HealthProbeBindAddress:  o.probeAddr,
		PprofBindAddress:        o.pprofAddr,
		LeaderElection:          o.leaderElect,
		LeaderElectionID:        "fleetlb-manager.fleetlb.io",
		LeaderElectionNamespace: o.leaderNS,
	})
	if err != nil {
		return err
	}
	// The objects' state (conditions, pool usage) as metrics, served by the leader.
	metrics.Registry.MustRegister(&statusmetrics.Collector{Reader: mgr.GetCache(), Elected: mgr.Elected(), Log: ctrl.Log.WithName("status-metrics")})
	fleetNS := o.fleet.fleetNamespace()
	fleetXDS, err := o.fleet.xdsAddressFor(o.xdsAddr)
	if err != nil {
		return err
	}
	fleetExists := fleet.Exists(mgr.GetClient())
	xds := server.New(server.Options{Log: ctrl.Log.WithName("xds"), Registerer: metrics.Registry, Debounce: o.debounce, MaxDelay: o.maxDelay,
		Insecure: o.xdsInsecure, FleetExists: fleetExists})
	var authority *xdscerts.Authority
	var creds credentials.TransportCredentials
	if o.xdsInsecure {
		log.Info("WARNING: --xds-insecure: xDS is served in plaintext and any client that claims a fleet gets its configuration, private keys included")
	} else {
		host, _, _ := net.SplitHostPort(fleetXDS)
		authority = &xdscerts.Authority{Reader: mgr.GetAPIReader(), Writer: mgr.GetClient(), Namespace: fleetNS,
			ServingHosts: servingHosts(host, "fleetlb-manager."+fleetNS+".svc", o.xdsCertHosts),
			Elected:      mgr.Elected(), Log: ctrl.Log.WithName("xds-certificates")}
		if err := mgr.Add(authority); err != nil {
			return err
		}
		creds = credentials.NewTLS(xdstransport.ServerTLS(authority.Current))
	}
	// The kubeconfig Secret is not of type kubernetes.io/tls: not cached.
	tenantClient, err := uncachedSecrets(mgr)
	if err != nil {
		return err
	}
	if err := (&tenant.Reconciler{
		Client: tenantClient, Recorder: mgr.GetEventRecorder("fleetlb-tenant"),
		Options: tenant.Options{ServerURL: o.tenantServer, CAData: ca, TokenTTL: o.tokenTTL},
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	lbAdmission := &admission.LoadBalancerReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("fleetlb-admission"), Quarantine: o.quarantine,
		Workers: o.admissionWorkers}
	if err := lbAdmission.SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&admission.FleetAddressReconciler{LB: lbAdmission}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&nodes.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("fleetlb-nodes"), Deny: deny}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&route.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("fleetlb-route"), Log: ctrl.Log.WithName("route"),
		ClaimGrace: o.claimGrace, Workers: o.admissionWorkers}).SetupWithManager(mgr); err != nil {
		return err
	}
	if _, err := (&dns.Reconciler{Client: mgr.GetClient(), Log: ctrl.Log.WithName("dns")}).Setup(mgr); err != nil {
		return err
	}
	if _, err := (&certs.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("fleetlb-certificates"), Log: ctrl.Log.WithName("certs")}).Setup(context.Background(), mgr); err != nil {
		return err
	}
	// Proxies connect to any replica; the leader, which writes Programmed,
	// reads what the others' proxies acknowledged from their report Leases.
	replica := cmp.Or(o.replica, os.Getenv("POD_NAME"))
	if replica == "" {
		if replica, err = os.Hostname(); err != nil {
			return fmt.Errorf("--replica-name is needed: %w", err)
		}
	}
	reporter := &xdsreport.Reporter{Client: mgr.GetClient(), Namespace: fleetNS, Replica: replica, XDS: xds, Log: ctrl.Log.WithName("xds-report"),
		FleetExists: fleetExists}
	reporter.Register()
	if err := mgr.Add(reporter); err != nil {
		return err
	}
	elected := mgr.Elected()
	if err := (&snapshot.Builder{Client: mgr.GetClient(), XDS: xds, Log: ctrl.Log.WithName("snapshot"), Recorder: mgr.GetEventRecorder("fleetlb-snapshot"),
		Replicas:          &xdsreport.Acks{Client: mgr.GetClient(), Namespace: fleetNS, Self: replica, XDS: xds},
		BackendDeny:       deny,
		StatusWorkers:     o.statusWorkers,
		ReconcileInterval: o.snapshotInterval,
		WriteStatus: func() bool {
			select {
			case <-elected:
				return true
			default:
				return false
			}
		}}).SetupWithManager(mgr); err != nil {
		return err
	}
	// Load reports from the proxies (LRS on the xDS port) say which cluster
	// serves each global name: the Serving condition and fleetlb_global_serving.
	loads := serving.NewLoads()
	loadReports := &serving.Server{Loads: loads, Insecure: o.xdsInsecure, FleetExists: fleetExists, Log: ctrl.Log.WithName("load-reports")}
	if err := (&serving.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("fleetlb-serving"), Loads: loads,
		Log: ctrl.Log.WithName("serving"), Registerer: metrics.Registry}).SetupWithManager(mgr); err != nil {
		return err
	}
	var certs fleet.ClientCertificates // a nil interface, not a nil *Authority, when insecure
	if authority != nil {
		certs = authority
	}
	if err := o.fleet.setup(mgr, xds, fleetXDS, certs); err != nil {
		return err
	}
	// The xDS server runs on every replica, leader or not.
	if err := mgr.Add(nonLeader(xds.Run)); err != nil {
		return err
	}
	if err := mgr.Add(nonLeader(func(ctx context.Context) error {
		ln, err := net.Listen("tcp", o.xdsAddr)
		if err != nil {
			return fmt.Errorf("xds listener: %w", err)
		}
		g := grpc.NewServer(xdstransport.ServerOptions(creds)...)
		xds.Register(g)
		loadReports.Register(g)
		log.Info("serving xDS", "address", ln.Addr().String(), "mTLS", creds != nil)
		go func() { <-ctx.Done(); g.GracefulStop() }()
		return g.Serve(ln)
	})); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	return mgr.Start(ctrl.SetupSignalHandler())
}

// servingHosts are the xDS serving certificate's names: the fleets' xDS
// host, the manager's Service and the comma-separated extra ones.
func servingHosts(fleetHost, service, extra string) []string {
	hosts := []string{fleetHost}
	for _, h := range append([]string{service}, strings.Split(extra, ",")...) {
		if h = strings.TrimSpace(h); h != "" && !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	return hosts
}

// nonLeader runs on every replica.
type nonLeader func(context.Context) error

func (f nonLeader) Start(ctx context.Context) error { return f(ctx) }
func (nonLeader) NeedLeaderElection() bool          { return false }
