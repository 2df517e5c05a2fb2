package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/e2e/harness"
	"github.com/fleetlb/fleetlb/internal/testenv"
	"github.com/fleetlb/fleetlb/manager/tenant"
	"github.com/fleetlb/fleetlb/manager/xdscerts"
)

// The VIP pool: 127.200.0.0/15 on loopback, clear of the e2e tests' pools.
const (
	poolRange        = "127.200.0.1-127.201.255.254"
	maxLoadBalancers = 100000
	lbPort           = 18080
)

// stepResult is one step's measurements (the JSON output).
type stepResult struct {
	Step          int       `json:"step"`
	LoadBalancers int       `json:"loadBalancers"`
	Routes        int       `json:"routes"`
	Tenants       int       `json:"tenants"`
	Started       time.Time `json:"started"`
	LoadAvgStart  string    `json:"loadAvgStart"`
	LoadAvgEnd    string    `json:"loadAvgEnd"`
	// Seconds from the first create.
	CreateSeconds float64 `json:"createSeconds"`
	// Seconds from the first create until all admitted / all Programmed
	// (negative: not reached within -step-timeout).
	AdmittedSeconds   float64 `json:"admittedSeconds"`
	ProgrammedSeconds float64 `json:"programmedSeconds"`
	// The same, after the last create.
	AdmittedAfterLast   float64 `json:"admittedAfterLastCreateSeconds"`
	ProgrammedAfterLast float64 `json:"programmedAfterLastCreateSeconds"`
	// How far it got (equal to the totals when it converged).
	Admitted   int `json:"admitted"`
	Programmed int `json:"programmed"`
	// Per controller, during the step (creates to convergence).
	Reconciles       map[string]float64 `json:"reconciles"`
	ReconcileSeconds map[string]float64 `json:"reconcileSeconds"`
	ReconcileErrors  map[string]float64 `json:"reconcileErrors"`
	// Memory in MiB.
	ManagerRSSIdle  float64 `json:"managerRSSIdleMiB"`
	ManagerRSS      float64 `json:"managerRSSMiB"`
	ManagerHWM      float64 `json:"managerHWMMiB"`
	ManagerHeap     float64 `json:"managerHeapInuseMiB"`
	ProxyRSSIdle    float64 `json:"proxyRSSIdleMiB"`
	ProxyRSS        float64 `json:"proxyRSSMiB"`
	ProxyHWM        float64 `json:"proxyHWMMiB"`
	PushedResources float64 `json:"pushedResources"`
	// The management apiserver's fleetlb.io writes during the step, by
	// "resource[/subresource] VERB" (the creates included), and their total
	// per object.
	APIWrites          map[string]float64 `json:"apiserverWrites"`
	APIWritesPerObject float64            `json:"apiserverWritesPerObject"`
	APIOtherRequests   map[string]float64 `json:"apiserverOtherRequests"`
	// Single changes at this size: write → Programmed at the new generation.
	ChangeLB    *latencies `json:"changeLoadBalancer,omitempty"`
	ChangeRoute *latencies `json:"changeRoute,omitempty"`
}

type latencies struct {
	// Write → Programmed at the new generation.
	Samples []float64 `json:"samplesMs"`
	P50     float64   `json:"p50Ms"`
	P99     float64   `json:"p99Ms"`
	Max     float64   `json:"maxMs"`
	// Write → the proxy serves it (a connection to the LoadBalancer's new
	// port accepted; a request to the Route's new path routed), probed every
	// 2 ms. A Route's first change has no probe.
	ProxySamples []float64 `json:"proxySamplesMs"`
	ProxyP50     float64   `json:"proxyP50Ms"`
	ProxyP99     float64   `json:"proxyP99Ms"`
	ProxyMax     float64   `json:"proxyMaxMs"`
	// Resources pushed to the proxy per change (mean).
	PushedPerChange float64 `json:"pushedResourcesPerChange"`
	// CPU time per change (mean, above each process's idle rate measured
	// just before): where a change's latency is spent, and whether it
	// grows with the fleet.
	ManagerCPUPerChangeMs float64 `json:"managerCPUPerChangeMs"`
	ProxyCPUPerChangeMs   float64 `json:"proxyCPUPerChangeMs"`
}

// process is a binary the step started.
type process struct {
	name string
	cmd  *exec.Cmd
	out  *os.File
	done chan struct{}
}

func start(binDir, logDir, name string, args ...string) (*process, error) {
	out, err := os.Create(filepath.Join(logDir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(binDir, name), args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, err
	}
	p := &process{name: name, cmd: cmd, out: out, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *process) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.out.Close()
}

func (p *process) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited (%v); its output is in %s", p.name, p.cmd.ProcessState, p.out.Name())
	default:
		return nil
	}
}

func runStep(ctx context.Context, c *config, idx, nLB, nRoute int) (*stepResult, error) {
	res := &stepResult{Step: idx + 1, LoadBalancers: nLB, Routes: nRoute, Tenants: c.tenants, Started: time.Now().UTC(), LoadAvgStart: loadAvg()}
	fmt.Printf("== step %d: %d LoadBalancers, %d Routes over %d tenants (load %s)\n", idx+1, nLB, nRoute, c.tenants, res.LoadAvgStart)
	logDir, err := os.MkdirTemp("", "fleetlb-bench-scale-")
	if err != nil {
		return nil, err
	}
	mgmt, err := testenv.New(testenv.Options{})
	if err != nil {
		return nil, err
	}
	defer mgmt.Stop()
	// The benchmark's own client: the creates go at -qps, not client-go's default 5/s.
	cfg := rest.CopyConfig(mgmt.Config)
	cfg.QPS, cfg.Burst = float32(c.qps), int(c.qps)
	cl, err := client.New(cfg, client.Options{Scheme: mgmt.Scheme})
	if err != nil {
		return nil, err
	}
	if err := setup(ctx, cl); err != nil {
		return nil, err
	}

	ports := make([]int, 5)
	for i := range ports {
		if ports[i], err = harness.FreePort(); err != nil {
			return nil, err
		}
	}
	xdsAddr, metricsAddr, pprofAddr, adminAddr := fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1]),
		fmt.Sprintf("127.0.0.1:%d", ports[2]), fmt.Sprintf("127.0.0.1:%d", ports[3])
	proxyPprofAddr := fmt.Sprintf("127.0.0.1:%d", ports[4])
	args := append([]string{"--kubeconfig", mgmt.Kubeconfig, "--tenant-api-server", mgmt.Config.Host, "--fleet-namespace", harness.FleetNamespace,
		"--metrics-bind-address", metricsAddr, "--health-probe-bind-address", "0", "--pprof-address", pprofAddr,
		"--xds-address", xdsAddr, "--xds-certificate-hosts", "127.0.0.1,localhost", "--leader-elect=false",
		"--backend-deny-cidrs", harness.BackendDenyCIDRs, "--address-quarantine=0"}, c.managerArgs...)
	mgr, err := start(c.binDir, logDir, "fleetlb-manager", args...)
	if err != nil {
		return nil, err
	}
	defer mgr.stop()

	if err := onboard(ctx, cl, c.tenants, mgr); err != nil {
		return nil, err
	}
	nodes, err := listenNodePorts(c.tenants, max(nLB, nRoute))
	if err != nil {
		return nil, err
	}
	defer nodes.close()
	certDir, err := proxyCredentials(ctx, cl, logDir, mgr)
	if err != nil {
		return nil, err
	}
	proxy, err := start(c.binDir, logDir, "fleetlb-proxy", "--xds-address", xdsAddr, "--fleet", v1.DefaultFleetName, "--node-id", "proxy-1",
		"--delta=true", "--admin-address", adminAddr, "--pprof-address", proxyPprofAddr,
		"--xds-cert-file", filepath.Join(certDir, corev1.TLSCertKey), "--xds-key-file", filepath.Join(certDir, corev1.TLSPrivateKeyKey),
		"--xds-ca-file", filepath.Join(certDir, xdscerts.CAKey))
	if err != nil {
		return nil, err
	}
	defer proxy.stop()

	w, err := newWatcher(ctx, mgmt.Config, mgmt.Scheme)
	if err != nil {
		return nil, err
	}
	defer w.stop()
	// Idle: the proxy has its first configuration (the fleet's VIP listeners).
	if err := waitHTTP(ctx, "http://"+adminAddr+"/ready", time.Minute, mgr, proxy); err != nil {
		return nil, fmt.Errorf("proxy not ready: %w", err)
	}
	time.Sleep(2 * time.Second)
	res.ManagerRSSIdle, _ = rss(mgr.cmd.Process.Pid)
	res.ProxyRSSIdle, _ = rss(proxy.cmd.Process.Pid)
	before, err := scrape("http://" + metricsAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	api, err := newAPIServer(mgmt.Config)
	if err != nil {
		return nil, err
	}
	apiBefore, err := api.metrics()
	if err != nil {
		return nil, err
	}

	var cpuDone chan error
	if c.profileDir != "" {
		cpuDone = make(chan error, 1)
		go func() {
			cpuDone <- fetch(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", pprofAddr, c.cpuSeconds),
				filepath.Join(c.profileDir, fmt.Sprintf("step%d-manager-cpu.pprof", idx+1)))
		}()
		go func() {
			if err := api.cpuProfile(c.cpuSeconds, filepath.Join(c.profileDir, fmt.Sprintf("step%d-apiserver-cpu.pprof", idx+1))); err != nil {
				fmt.Fprintln(os.Stderr, "apiserver CPU profile:", err)
			}
		}()
	}

	total := nLB + nRoute
	t0 := time.Now()
	stopProgress := progress(w, t0, total)
	defer stopProgress()
	createErr := create(ctx, cl, c, nLB, nRoute)
	lastCreate := time.Now()
	res.CreateSeconds = lastCreate.Sub(t0).Seconds()
	fmt.Printf("   created %d objects in %.1fs\n", total, res.CreateSeconds)
	if createErr != nil {
		return res, createErr
	}
	deadline := t0.Add(c.stepTimeout)
	admitted := w.waitUntil(deadline, func(s counts) bool { return s.admitted >= total }, mgr.exited, proxy.exited)
	res.AdmittedSeconds, res.AdmittedAfterLast = since(admitted, t0), since(admitted, lastCreate)
	programmed := w.waitUntil(deadline, func(s counts) bool { return s.programmed >= total }, mgr.exited, proxy.exited)
	res.ProgrammedSeconds, res.ProgrammedAfterLast = since(programmed, t0), since(programmed, lastCreate)
	stopProgress()
	s := w.counts()
	res.Admitted, res.Programmed = s.admitted, s.programmed
	fmt.Printf("   admitted %d/%d (%.1fs), Programmed %d/%d (%.1fs) from the first create\n", s.admitted, total, res.AdmittedSeconds, s.programmed, total, res.ProgrammedSeconds)

	after, err := scrape("http://" + metricsAddr + "/metrics")
	if err != nil {
		return res, err
	}
	res.Reconciles = byController(after, before, "controller_runtime_reconcile_total")
	res.ReconcileSeconds = byController(after, before, "controller_runtime_reconcile_time_seconds_sum")
	res.ReconcileErrors = byController(after, before, "controller_runtime_reconcile_errors_total")
	res.PushedResources = sum(after, "fleetlb_xds_pushed_resources_total") - sum(before, "fleetlb_xds_pushed_resources_total")
	if apiAfter, err := api.metrics(); err == nil {
		res.APIWrites = fleetWrites(apiAfter, apiBefore)
		res.APIOtherRequests = otherRequests(apiAfter, apiBefore)
		for k, v := range res.APIWrites {
			if !strings.HasSuffix(k, "conflict") {
				res.APIWritesPerObject += v / float64(max(total, 1))
			}
		}
	} else {
		fmt.Fprintln(os.Stderr, "apiserver metrics:", err)
	}
	res.ManagerHeap = sum(after, "go_memstats_heap_inuse_bytes") / (1 << 20)
	res.ManagerRSS, res.ManagerHWM = rss(mgr.cmd.Process.Pid)
	res.ProxyRSS, res.ProxyHWM = rss(proxy.cmd.Process.Pid)
	if c.profileDir != "" {
		if err := fetch("http://"+pprofAddr+"/debug/pprof/heap", filepath.Join(c.profileDir, fmt.Sprintf("step%d-manager-heap.pprof", idx+1))); err != nil {
			fmt.Fprintln(os.Stderr, "heap profile:", err)
		}
	}

	var stepErr error
	if admitted.IsZero() || programmed.IsZero() {
		stepErr = fmt.Errorf("not converged within -step-timeout %s (process logs in %s)", c.stepTimeout, logDir)
	} else {
		metrics := "http://" + metricsAddr + "/metrics"
		// With -profile-dir, the manager's and the proxy's CPU profiles over
		// each series of changes (its 2-s idle window, then about a second per change).
		profiled := func(kind string, f func() (*latencies, error)) (*latencies, error) {
			if c.profileDir == "" {
				return f()
			}
			done := make(chan error, 2)
			for name, addr := range map[string]string{"manager": pprofAddr, "proxy": proxyPprofAddr} {
				go func() {
					done <- fetch(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, c.changes+2),
						filepath.Join(c.profileDir, fmt.Sprintf("step%d-%s-change-%s-cpu.pprof", idx+1, name, kind)))
				}()
			}
			l, err := f()
			for range 2 {
				if perr := <-done; perr != nil {
					fmt.Fprintln(os.Stderr, "CPU profile:", perr)
				}
			}
			return l, err
		}
		if nLB > 0 {
			res.ChangeLB, stepErr = profiled("lb", func() (*latencies, error) {
				return changes(ctx, cl, w, c.changes, metrics, lbKey(c, 0), changeLB, mgr, proxy)
			})
		}
		if nRoute > 0 && stepErr == nil {
			res.ChangeRoute, stepErr = profiled("route", func() (*latencies, error) {
				return changes(ctx, cl, w, c.changes, metrics, routeKey(c, 0), changeRoute, mgr, proxy)
			})
		}
	}
	if cpuDone != nil {
		if err := <-cpuDone; err != nil {
			fmt.Fprintln(os.Stderr, "CPU profile:", err)
		}
	}
	res.LoadAvgEnd = loadAvg()
	if stepErr == nil {
		os.RemoveAll(logDir)
	}
	return res, stepErr
}

// progress prints, every 10 s until stopped, how many objects are admitted
// and Programmed.
func progress(w *watcher, t0 time.Time, total int) (stop func()) {
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(10 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				s := w.counts()
				fmt.Printf("   %4.0fs: admitted %d/%d, Programmed %d/%d (load %s)\n", time.Since(t0).Seconds(), s.admitted, total, s.programmed, total, loadAvg())
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done) }) }
}

func since(t, from time.Time) float64 {
	if t.IsZero() {
		return -1
	}
	return t.Sub(from).Seconds()
}

// setup creates the pool, the default fleet (exposure None: its proxy runs
// here) and the fleets' namespace.
func setup(ctx context.Context, cl client.Client) error {
	if err := cl.Create(ctx, &v1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: "vips"}, Spec: v1.AddressPoolSpec{Addresses: []v1.AddressRange{poolRange}}}); err != nil {
		return err
	}
	if err := cl.Create(ctx, &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: v1.DefaultFleetName}, Spec: v1.ProxyFleetSpec{
		Exposure: v1.ExposureNone, AddressPool: "vips",
		HTTP: &v1.FleetListener{Port: harness.HTTPPort}, HTTPS: &v1.FleetListener{Port: harness.HTTPSPort},
	}}); err != nil {
		return err
	}
	return cl.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: harness.FleetNamespace}})
}

func tenantName(i int) string { return fmt.Sprintf("t%d", i+1) }

// onboard creates the tenants (limits above the step) and one node each, and
// waits for their namespaces.
func onboard(ctx context.Context, cl client.Client, n int, mgr *process) error {
	big := ptr.To(int32(1 << 30))
	for i := range n {
		t := &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: tenantName(i)}, Spec: v1.TenantSpec{
			AddressPool: "vips", Hostnames: []v1.Hostname{v1.Hostname("*." + tenantName(i) + ".example.com")},
			NodeCIDRs: harness.NodeCIDRs,
			Limits: v1.TenantLimits{MaxLoadBalancers: big, MaxRoutes: big, MaxAddresses: big, MaxHostnames: big,
				MaxRouteConfigBytes: big},
		}}
		if err := cl.Create(ctx, t); err != nil {
			return err
		}
	}
	for i := range n {
		ns := tenant.Namespace(tenantName(i))
		if err := harness.Eventually(time.Minute, func() error {
			if err := mgr.exited(); err != nil {
				return err
			}
			var sa corev1.ServiceAccount
			return cl.Get(ctx, client.ObjectKey{Namespace: ns, Name: tenant.CCMName}, &sa)
		}); err != nil {
			return fmt.Errorf("tenant %s: %w", tenantName(i), err)
		}
		nodes := &v1.TenantNodes{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: v1.TenantNodesName}, Spec: v1.TenantNodesSpec{
			Cluster: "bench", Nodes: []v1.TenantNode{{Name: "node-1", Addresses: []v1.IPAddress{v1.IPAddress(nodeAddress(i))}}},
		}}
		if err := cl.Create(ctx, nodes); err != nil {
			return err
		}
	}
	return nil
}

// proxyCredentials writes the fleet's xDS client certificate (issued by the
// manager) into a directory.
func proxyCredentials(ctx context.Context, cl client.Client, dir string, mgr *process) (string, error) {
	var sec corev1.Secret
	key := client.ObjectKey{Namespace: harness.FleetNamespace, Name: xdscerts.ClientSecretName(v1.DefaultFleetName)}
	if err := harness.Eventually(time.Minute, func() error {
		if err := mgr.exited(); err != nil {
			return err
		}
		if err := cl.Get(ctx, key, &sec); err != nil {
			return err
		}
		if len(sec.Data[corev1.TLSCertKey]) == 0 || len(sec.Data[xdscerts.CAKey]) == 0 {
			return errors.New("not issued yet")
		}
		return nil
	}); err != nil {
		return "", fmt.Errorf("xDS client certificate: %w", err)
	}
	out := filepath.Join(dir, "xds-tls")
	if err := os.MkdirAll(out, 0o700); err != nil {
		return "", err
	}
	for k, b := range sec.Data {
		if err := os.WriteFile(filepath.Join(out, k), b, 0o600); err != nil {
			return "", err
		}
	}
	return out, nil
}

func lbKey(c *config, i int) client.ObjectKey {
	return client.ObjectKey{Namespace: tenant.Namespace(tenantName(i % c.tenants)), Name: fmt.Sprintf("lb-%05d", i)}
}

func routeKey(c *config, i int) client.ObjectKey {
	return client.ObjectKey{Namespace: tenant.Namespace(tenantName(i % c.tenants)), Name: fmt.Sprintf("rt-%05d", i)}
}

func newLB(c *config, i int) *v1.LoadBalancer {
	k := lbKey(c, i)
	// As the ccm creates it: with the manager's finalizer already on.
	return &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: k.Namespace, Name: k.Name, Finalizers: []string{v1.FinalizerAddressRelease}}, Spec: v1.LoadBalancerSpec{
		Source: v1.ServiceSource{Cluster: "bench", Namespace: "default", Name: k.Name, UID: fmt.Sprintf("uid-lb-%d", i)},
		Ports:  []v1.LoadBalancerPort{{Name: "tcp", Port: lbPort, Protocol: v1.ProtocolTCP, NodePort: v1.PortNumber(nodePort(i))}},
	}}
}

func newRoute(c *config, i int) *v1.Route {
	k := routeKey(c, i)
	t := tenantName(i % c.tenants)
	return &v1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: k.Namespace, Name: k.Name}, Spec: v1.RouteSpec{
		Source:    v1.RouteSource{Kind: v1.SourceIngress, Cluster: "bench", Namespace: "default", Name: k.Name, UID: fmt.Sprintf("uid-rt-%d", i)},
		Hostnames: []v1.Hostname{v1.Hostname(fmt.Sprintf("r%05d.%s.example.com", i, t))},
		Rules: []v1.RouteRule{{
			Matches:  []v1.RouteMatch{{Path: &v1.PathMatch{Type: v1.PathPrefix, Value: "/"}}},
			Backends: []v1.RouteBackend{{ServiceName: "web", ServicePort: ptr.To(v1.PortNumber(80)), NodePort: v1.PortNumber(nodePort(i))}},
		}},
	}}
}

// create makes the step's objects with -workers concurrent creates,
// LoadBalancers and Routes interleaved.
func create(ctx context.Context, cl client.Client, c *config, nLB, nRoute int) error {
	jobs := make(chan client.Object, c.workers)
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for range c.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for o := range jobs {
				if err := cl.Create(ctx, o); err != nil {
					firstErr.CompareAndSwap(nil, &err)
				}
			}
		}()
	}
	for i := range max(nLB, nRoute) {
		if firstErr.Load() != nil {
			break
		}
		if i < nLB {
			jobs <- newLB(c, i)
		}
		if i < nRoute {
			jobs <- newRoute(c, i)
		}
	}
	close(jobs)
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return *p
	}
	return nil
}

// changeLB moves the LoadBalancer's port: a new listener on its VIP.
func changeLB(ctx context.Context, cl client.Client, key client.ObjectKey, n int) (int64, func() bool, error) {
	var lb v1.LoadBalancer
	if err := cl.Get(ctx, key, &lb); err != nil {
		return 0, nil, err
	}
	// A port no earlier change used: a listener still draining cannot answer the probe.
	port := lbPort + 1 + n
	lb.Spec.Ports[0].Port = v1.PortNumber(port)
	err := cl.Update(ctx, &lb)
	var probe func() bool
	if len(lb.Status.Addresses) > 0 {
		addr := net.JoinHostPort(string(lb.Status.Addresses[0].IP), strconv.Itoa(port))
		probe = func() bool { return dialable(addr) }
	}
	return lb.Generation, probe, err
}

// changeRoute changes the Route's path prefix.
func changeRoute(ctx context.Context, cl client.Client, key client.ObjectKey, n int) (int64, func() bool, error) {
	var rt v1.Route
	if err := cl.Get(ctx, key, &rt); err != nil {
		return 0, nil, err
	}
	path := fmt.Sprintf("/v%d", n)
	rt.Spec.Rules[0].Matches[0].Path.Value = path
	err := cl.Update(ctx, &rt)
	// The first change narrows "/", which matched the new path already: no probe.
	var probe func() bool
	if n > 0 && len(rt.Status.Addresses) > 0 && len(rt.Spec.Hostnames) > 0 {
		url := fmt.Sprintf("http://%s%s", net.JoinHostPort(string(rt.Status.Addresses[0].IP), strconv.Itoa(harness.HTTPPort)), path)
		host := string(rt.Spec.Hostnames[0])
		probe = func() bool { return routed(url, host) }
	}
	return rt.Generation, probe, err
}

// dialable reports whether a TCP connection to addr is accepted.
func dialable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

var probeClient = &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// routed reports whether the proxy routes url for host: the node ports'
// answer (204), not the proxy's 404 for a path no route matches.
func routed(url, host string) bool {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	req.Host = host
	resp, err := probeClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusNoContent
}

// changes times n single changes, one after the other: write → Programmed at
// the written generation (seen by the watch).
func changes(ctx context.Context, cl client.Client, w *watcher, n int, metricsURL string, key client.ObjectKey,
	change func(context.Context, client.Client, client.ObjectKey, int) (int64, func() bool, error), mgr, proxy *process) (*latencies, error) {
	l := &latencies{}
	pushedBefore := 0.0
	if m, err := scrape(metricsURL); err == nil {
		pushedBefore = sum(m, "fleetlb_xds_pushed_resources_total")
	}
	// Each process's idle rate (health checks, resyncs) first, to subtract.
	idle := startCPU(mgr, proxy)
	time.Sleep(2 * time.Second)
	idleRate := idle.rates()
	busy := startCPU(mgr, proxy)
	for i := range n {
		time.Sleep(500 * time.Millisecond) // apart, so each is alone in its debounce window
		wrote := time.Now()
		gen, probe, err := change(ctx, cl, key, i)
		if err != nil {
			return l, err
		}
		// The proxy serving it, probed beside the wait for Programmed.
		served := make(chan time.Time, 1)
		go func() { served <- probeUntil(probe, wrote.Add(30*time.Second)) }()
		at := w.waitProgrammed(key, gen, 30*time.Second)
		if at.IsZero() {
			return l, fmt.Errorf("%s generation %d not Programmed within 30s", key, gen)
		}
		l.Samples = append(l.Samples, float64(at.Sub(wrote).Microseconds())/1000)
		if t := <-served; !t.IsZero() {
			l.ProxySamples = append(l.ProxySamples, float64(t.Sub(wrote).Microseconds())/1000)
		}
	}
	if m, err := scrape(metricsURL); err == nil && n > 0 {
		l.PushedPerChange = (sum(m, "fleetlb_xds_pushed_resources_total") - pushedBefore) / float64(n)
	}
	if n > 0 {
		perChange := busy.perChange(idleRate, n)
		l.ManagerCPUPerChangeMs, l.ProxyCPUPerChangeMs = perChange[0], perChange[1]
	}
	l.P50, l.P99, l.Max = quantiles(l.Samples)
	l.ProxyP50, l.ProxyP99, l.ProxyMax = quantiles(l.ProxySamples)
	return l, nil
}

// probeUntil tries probe every 2 ms until it holds (its time) or the
// deadline (zero time; also when there is no probe).
func probeUntil(probe func() bool, deadline time.Time) time.Time {
	if probe == nil {
		return time.Time{}
	}
	for time.Now().Before(deadline) {
		if probe() {
			return time.Now()
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Time{}
}

func quantiles(samples []float64) (p50, p99, maxV float64) {
	s := slices.Clone(samples)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0, 0, 0
	}
	return s[len(s)/2], s[min(len(s)-1, len(s)*99/100)], s[len(s)-1]
}

// waitHTTP waits for a 200 from url (a readiness endpoint: nothing else polls).
func waitHTTP(ctx context.Context, url string, timeout time.Duration, procs ...*process) error {
	return harness.Eventually(timeout, func() error {
		for _, p := range procs {
			if err := p.exited(); err != nil {
				return err
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	})
}

func fetch(url, file string) error {
	resp, err := (&http.Client{Timeout: 10 * time.Minute}).Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return save(resp.Body, file)
}

// save writes r (a profile) to file.
func save(r io.Reader, file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
