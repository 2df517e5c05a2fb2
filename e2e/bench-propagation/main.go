// Command bench-propagation measures how fast a tenant's Service becomes
// usable: it runs a whole fleet on this machine (e2e/harness), creates N
// LoadBalancer Services across two tenants, and reports p50/p99/max of
// apply → address on the tenant Service and apply → first connection through
// the VIP that reaches the Service's node. With -routes it creates N Ingresses
// with TLS instead and reports apply → address on the Ingress and apply → first
// HTTPS 200 through the fleet's shared VIP (SNI, verified against the CA).
// With -gateways it creates N Gateways, each with a hostname-less HTTPRoute,
// and reports apply → Gateway Programmed and apply → first HTTP 200 through
// the Gateway's own VIP.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/fleetlb/fleetlb/ccm/service"
	"github.com/fleetlb/fleetlb/e2e/harness"
	"github.com/fleetlb/fleetlb/internal/echo"
	"github.com/fleetlb/fleetlb/internal/testenv"
)

func main() {
	n := flag.Int("n", 100, "number of Services, Ingresses or Gateways (split over two tenants, at most 249)")
	routes := flag.Bool("routes", false, "measure Ingresses with TLS (L7) instead of LoadBalancer Services")
	gateways := flag.Bool("gateways", false, "measure Gateways with an HTTPRoute, each on its own VIP, instead of LoadBalancer Services")
	timeout := flag.Duration("timeout", 5*time.Minute, "give up after this long")
	flag.StringVar(&profileDir, "profile-dir", "", "save CPU profiles of the management and tenant kube-apiservers over the burst here (LoadBalancer Services only)")
	flag.IntVar(&profileSeconds, "profile-seconds", 5, "length of those profiles, from the first create")
	flag.BoolVar(&xdsInsecure, "xds-insecure", false, "run xDS in plaintext (manager and proxy with --xds-insecure) to compare with the default mTLS")
	flag.Parse()
	if *n < 1 || *n > 249 {
		fmt.Fprintln(os.Stderr, "bench-propagation: -n must be 1-249 (the VIP pool is 127.0.110.1-250, the fleet takes one)")
		os.Exit(2)
	}
	run := run
	switch {
	case *routes:
		run = runRoutes
	case *gateways:
		run = runGateways
	}
	if err := run(*n, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "bench-propagation:", err)
		os.Exit(1)
	}
}

type sample struct{ address, traffic time.Duration }

// xdsInsecure is the -xds-insecure flag.
var xdsInsecure bool

// metricsAddr is where the manager serves /metrics.
var metricsAddr string

// fleet starts the installation: management, two tenants with one node each, a proxy.
func fleet() (*harness.Harness, *harness.Fleet, []*harness.Tenant, func(), error) {
	root, err := testenv.ModuleRoot()
	if err != nil {
		return nil, nil, nil, nil, err
	}
	binDir := filepath.Join(root, "bin")
	if err := harness.Build(binDir); err != nil {
		return nil, nil, nil, nil, err
	}
	dir, err := os.MkdirTemp("", "fleetlb-bench-")
	if err != nil {
		return nil, nil, nil, nil, err
	}
	h, err := harness.New(binDir, dir)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	done := func() { h.Close(); os.RemoveAll(dir) }
	fail := func(err error) (*harness.Harness, *harness.Fleet, []*harness.Tenant, func(), error) {
		done()
		return nil, nil, nil, nil, err
	}
	port, err := harness.FreePort()
	if err != nil {
		return fail(err)
	}
	metricsAddr = fmt.Sprintf("127.0.0.1:%d", port)
	f, err := h.StartFleetWith(harness.FleetOptions{XDSInsecure: xdsInsecure, MetricsAddress: metricsAddr}, "127.0.110.1-127.0.110.250")
	if err != nil {
		return fail(err)
	}
	if _, err := f.StartProxy(true); err != nil {
		return fail(err)
	}
	var tenants []*harness.Tenant
	for i, name := range []string{"a", "b"} {
		tc, err := f.AddTenant(name)
		if err != nil {
			return fail(err)
		}
		if err := tc.AddNode(name+"-1", fmt.Sprintf("127.0.11%d.1", i+1), "z1"); err != nil {
			return fail(err)
		}
		tenants = append(tenants, tc)
	}
	time.Sleep(time.Second) // let TenantNodes settle so every object starts from the same state
	return h, f, tenants, done, nil
}

func run(n int, timeout time.Duration) error {
	h, f, tenants, done, err := fleet()
	if err != nil {
		return err
	}
	defer done()
	// Addresses and stages come from watches: 100 pollers would load the
	// machine that is measured, and poll 100 ms apart.
	w, err := watchStages(f, tenants)
	if err != nil {
		return err
	}
	defer w.stop()

	ctx := context.Background()
	profiled := profileAPIServers(map[string]*rest.Config{"management": f.Mgmt.Config, "tenant-" + tenants[0].Name: tenants[0].Env.Config, "tenant-" + tenants[1].Name: tenants[1].Env.Config})
	samples := make([]sample, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	deadline := time.Now().Add(timeout)
	for i := range n {
		tc := tenants[i%2]
		name := fmt.Sprintf("svc-%03d", i)
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: ptr.To(service.DefaultClass),
				Selector: map[string]string{"app": name}, Ports: []corev1.ServicePort{{Port: 8080, Protocol: corev1.ProtocolTCP}}},
		}
		tl := w.expect(tc.Name, name)
		applied := tl.applied
		if err := tc.Env.Client.Create(ctx, svc); err != nil {
			return err
		}
		// Play kube-proxy at once, so only fleetlb's own propagation is measured.
		node := fmt.Sprintf("127.0.11%d.1:%d", i%2+1, svc.Spec.Ports[0].NodePort)
		if err := h.Backends.Start(name, echo.Identity{Cluster: tc.Name, Node: tc.Name + "-1", Service: "default/" + name}, "tcp", node); err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-tl.addressed:
			case <-time.After(time.Until(deadline)):
				errs <- fmt.Errorf("%s/%s has no address before the deadline", tc.Name, name)
				return
			}
			ip := tl.ip
			samples[i].address = tl.at[stageAddress].Sub(applied)
			for time.Now().Before(deadline) {
				if id, err := connect(net.JoinHostPort(ip, "8080")); err == nil && id.Service == "default/"+name {
					samples[i].traffic = time.Since(applied)
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			errs <- fmt.Errorf("%s: no traffic through %s before the deadline", name, ip)
		}()
	}
	wg.Wait()
	close(errs)
	if err := failed(h, errs); err != nil {
		return err
	}
	if err := profiled(); err != nil {
		fmt.Fprintln(os.Stderr, "apiserver profiles:", err)
	}
	xds := "mTLS"
	if xdsInsecure {
		xds = "plaintext (-xds-insecure)"
	}
	fmt.Printf("%d LoadBalancer Services over 2 tenants (created back to back), xDS over %s:\n", n, xds)
	report(samples, "apply → address on the Service", func(s sample) time.Duration { return s.address })
	report(samples, "apply → first connection via VIP", func(s sample) time.Duration { return s.traffic })
	w.report()
	if err := controllerTimes(metricsAddr); err != nil {
		fmt.Println("manager metrics:", err)
	}
	return nil
}

// failed returns the first error, with the processes' output saved beside it.
func failed(h *harness.Harness, errs chan error) error {
	if err := <-errs; err != nil {
		out := filepath.Join(os.TempDir(), "fleetlb-bench-processes.log")
		_ = os.WriteFile(out, []byte(h.Output()), 0o644)
		return fmt.Errorf("%w (process output in %s)", err, out)
	}
	return nil
}

func report(samples []sample, what string, get func(sample) time.Duration) {
	n := len(samples)
	ds := make([]time.Duration, n)
	for i, s := range samples {
		ds[i] = get(s)
	}
	fmt.Printf("%-36s p50 %8s  p99 %8s  max %8s\n", what, quantile(ds, 0.50), quantile(ds, 0.99), quantile(ds, 1))
}

// quantile is the q-quantile of ds (sorted here), rounded to milliseconds.
func quantile(ds []time.Duration, q float64) time.Duration {
	slices.Sort(ds)
	n := len(ds)
	return ds[min(n-1, int(q*float64(n)))].Round(time.Millisecond)
}

func connect(addr string) (echo.Identity, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return echo.Identity{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return echo.Identity{}, err
	}
	return echo.ParseLine(line)
}
