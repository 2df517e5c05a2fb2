// Command fleetlb-proxy is the Go data plane: it takes its whole configuration from
// the fleetlb xDS server over ADS and serves the fleet's L4 and L7 listeners.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/fleetlb/fleetlb/internal/proxy"
	"github.com/fleetlb/fleetlb/internal/version"
	"github.com/fleetlb/fleetlb/internal/xdstransport"
)

func main() {
	var (
		xdsAddress   = flag.String("xds-address", "127.0.0.1:18000", "host:port of the fleetlb xDS (ADS) server")
		fleet        = flag.String("fleet", "default", "the ProxyFleet this proxy belongs to (sent as node.cluster)")
		nodeID       = flag.String("node-id", "", "node.id sent to the xDS server (default: hostname)")
		delta        = flag.Bool("delta", false, "use incremental (delta) xDS instead of state of the world")
		adminAddress = flag.String("admin-address", "127.0.0.1:9901", "serves /ready (200 once the first configuration is applied) and /metrics; keep it on loopback")
		certFile     = flag.String("xds-cert-file", "/etc/fleetlb/xds-tls/tls.crt", "client certificate for xDS (the fleet's Secret fleetlb-proxy-<fleet>-xds-tls); re-read on every connection")
		keyFile      = flag.String("xds-key-file", "/etc/fleetlb/xds-tls/tls.key", "key of --xds-cert-file")
		caFile       = flag.String("xds-ca-file", "/etc/fleetlb/xds-tls/ca.crt", "CA that signs the xDS server's certificate")
		serverName   = flag.String("xds-server-name", "", "name the xDS server's certificate must carry (default: the host of --xds-address)")
		xdsInsecure  = flag.Bool("xds-insecure", false, "connect to xDS in plaintext, without a client certificate (only against a manager run with --xds-insecure)")
		drainTimeout = flag.Duration("drain-timeout", 30*time.Second, "how long a removed or changed listener's connections may continue")
		showVersion  = flag.Bool("version", false, "print the version and exit")
		pprofAddress = flag.String("pprof-address", "", "address of net/http/pprof (/debug/pprof/), on its own listener; empty disables it; keep it on loopback")
	)
	zopts := zap.Options{}
	zopts.BindFlags(flag.CommandLine)
	flag.Parse()
	if *showVersion {
		fmt.Println("fleetlb-proxy", version.String())
		return
	}
	log := zap.New(zap.UseFlagOptions(&zopts)).WithName("fleetlb-proxy")

	if *nodeID == "" {
		h, err := os.Hostname()
		if err != nil {
			log.Error(err, "no --node-id and no hostname")
			os.Exit(2)
		}
		*nodeID = h
	}
	var creds credentials.TransportCredentials
	if *xdsInsecure {
		log.Info("WARNING: --xds-insecure: xDS in plaintext, without a client certificate")
	} else {
		host, _, err := net.SplitHostPort(*xdsAddress)
		if err != nil {
			log.Error(err, "--xds-address")
			os.Exit(2)
		}
		files := xdstransport.ClientFiles{CertFile: *certFile, KeyFile: *keyFile, CAFile: *caFile, ServerName: cmp.Or(*serverName, host)}
		if err := files.Validate(); err != nil {
			log.Error(err, "xDS client certificate (or --xds-insecure)")
			os.Exit(2)
		}
		creds = xdstransport.ClientCredentials(files)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *pprofAddress != "" {
		closePprof, err := servePprof(*pprofAddress)
		if err != nil {
			log.Error(err, "--pprof-address")
			os.Exit(2)
		}
		defer closePprof()
		log.Info("serving pprof", "address", *pprofAddress)
	}
	if err := run(ctx, log, *xdsAddress, creds, &corev3.Node{Id: *nodeID, Cluster: *fleet}, *delta, *adminAddress, *drainTimeout); err != nil && !errors.Is(err, context.Canceled) {
		log.Error(err, "exiting")
		os.Exit(1)
	}
}

// run serves until ctx ends; nil creds dial xDS in plaintext.
func run(ctx context.Context, log logr.Logger, xdsAddress string, creds credentials.TransportCredentials, node *corev3.Node, delta bool, adminAddress string, drain time.Duration) error {
	conn, err := grpc.NewClient(xdsAddress, xdstransport.DialOptions(creds)...)
	if err != nil {
		return fmt.Errorf("xds connection: %w", err)
	}
	defer conn.Close()

	opts, closeDataPlane, err := dataPlane(log)
	if err != nil {
		return err
	}
	defer closeDataPlane()
	opts.Node, opts.Delta, opts.DrainTimeout = node, delta, drain
	p, err := proxy.New(conn, opts, log)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", adminAddress)
	if err != nil {
		return fmt.Errorf("admin listener: %w", err)
	}
	if ip := ln.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
		log.Info("WARNING: the admin listener (/metrics, /ready) is not on loopback", "address", ln.Addr().String())
	}
	admin := &http.Server{Handler: adminHandler(p.Ready()), ReadHeaderTimeout: 10 * time.Second}
	go admin.Serve(ln)
	defer admin.Close()
	log.Info("starting", "version", version.Version, "revision", version.Revision, "xds", xdsAddress, "mTLS", creds != nil, "node", node.GetId(), "fleet", node.GetCluster(), "delta", delta, "admin", ln.Addr().String())
	return p.Run(ctx)
}

// servePprof serves net/http/pprof on its own listener and mux, so profiles
// are never reachable through the admin address.
func servePprof(addr string) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return func() { _ = srv.Close() }, nil
}

// adminHandler serves /ready and /metrics (controller-runtime's registry).
func adminHandler(ready <-chan struct{}) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-ready:
			fmt.Fprintln(w, "ready")
		default:
			http.Error(w, "no configuration applied yet", http.StatusServiceUnavailable)
		}
	})
	mux.Handle("/metrics", promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{}))
	return mux
}
