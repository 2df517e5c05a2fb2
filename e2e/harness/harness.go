// Package harness runs a whole fleetlb installation on one machine: real
// control planes (kube-apiserver + etcd) for the management cluster and each
// tenant, the real fleetlb-manager, fleetlb-ccm and fleetlb-proxy binaries as
// separate processes, and echo backends on 127.0.0.0/8 playing the tenant
// nodes' NodePorts (kube-proxy). The e2e tests and `make demo` both use it.
package harness

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/e2e/hollow"
	"github.com/fleetlb/fleetlb/internal/echo"
	"github.com/fleetlb/fleetlb/internal/testenv"
	"github.com/fleetlb/fleetlb/manager/tenant"
	"github.com/fleetlb/fleetlb/manager/xdscerts"
)

// Binaries are the commands the harness runs.
var Binaries = []string{"fleetlb-manager", "fleetlb-ccm", "fleetlb-proxy"}

// Build compiles the binaries into dir.
func Build(dir string) error {
	root, err := testenv.ModuleRoot()
	if err != nil {
		return err
	}
	args := []string{"build", "-o", dir + "/"}
	for _, b := range Binaries {
		args = append(args, "./cmd/"+b)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building the binaries: %v\n%s", err, out)
	}
	return nil
}

// Harness owns everything it started; Close stops it all, newest first.
type Harness struct {
	BinDir string
	// Dir holds kubeconfigs and other files for the user.
	Dir      string
	Backends *echo.Fleet

	mu      sync.Mutex
	closers []func()
	procs   []*Process
	closed  bool
}

// New returns a harness that runs binaries from binDir and keeps files in dir.
func New(binDir, dir string) (*Harness, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	h := &Harness{BinDir: binDir, Dir: dir, Backends: echo.NewFleet()}
	h.onClose(func() { _ = h.Backends.Close() })
	return h, nil
}

func (h *Harness) onClose(f func()) {
	h.mu.Lock()
	h.closers = append(h.closers, f)
	h.mu.Unlock()
}

// Close stops every process, control plane and backend.
func (h *Harness) Close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	cs := h.closers
	h.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
}

// Output is every process's output, for failure reports.
func (h *Harness) Output() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var b strings.Builder
	for _, p := range h.procs {
		fmt.Fprintf(&b, "--- %s ---\n%s\n", p.Name, p.out.String())
	}
	return b.String()
}

// Process is a running binary.
type Process struct {
	Name string
	args []string
	h    *Harness
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Start runs a binary until Stop or Close.
func (h *Harness) Start(name string, args ...string) (*Process, error) {
	p := &Process{Name: name, args: args, h: h, out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(filepath.Join(h.BinDir, name), args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	h.mu.Lock()
	h.procs = append(h.procs, p)
	h.mu.Unlock()
	h.onClose(p.Stop)
	return p, nil
}

// Stop ends the process: SIGINT, then SIGKILL after 10 s.
func (p *Process) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Kill ends the process at once (SIGKILL), as a crash would.
func (p *Process) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Restart starts the same binary with the same arguments again (after Stop or
// Kill); the new process replaces p.
func (p *Process) Restart() (*Process, error) {
	p.Stop()
	return p.h.Start(p.Name, p.args...)
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Eventually retries f every 100 ms until it succeeds or timeout passes.
func Eventually(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Ports of the default fleet's shared HTTP and HTTPS listeners.
const (
	HTTPPort  = 8080
	HTTPSPort = 8443
	// FleetNamespace holds the fleets' bootstrap ConfigMaps.
	FleetNamespace = "fleetlb-system"
)

// Backend confinement here: tenant nodes live on 127.0.1.0-127.0.127.255
// (NodeCIDRs, for every tenant whose spec names none); the manager denies the
// rest of loopback, including 127.0.0.0/24 where the control planes, the
// manager and the proxy's admin listen, besides the usual link-local,
// unspecified and multicast ranges (pools and fleet VIPs are always denied).
var (
	NodeCIDRs        = []v1.CIDR{"127.0.0.0/17"}
	BackendDenyCIDRs = "127.0.0.0/24,127.0.128.0/17,127.1.0.0/16,127.2.0.0/15,127.4.0.0/14,127.8.0.0/13,127.16.0.0/12,127.32.0.0/11,127.64.0.0/10,127.128.0.0/9," +
		"::1/128,169.254.0.0/16,fe80::/10,0.0.0.0/8,::/128,224.0.0.0/4,ff00::/8,255.255.255.255/32"
)

// Fleet is the management cluster with the manager running.
type Fleet struct {
	h       *Harness
	Mgmt    *testenv.Env
	XDSAddr string
	// Manager is the running fleetlb-manager.
	Manager *Process
	// Gate stands between the management apiserver and every fleetlb process
	// (manager and ccms), so a test can make the management cluster unreachable.
	Gate *Gate

	managerArgs []string // shared by every manager replica
	insecure    bool     // xDS in plaintext (FleetOptions.XDSInsecure)
}

// StartFleet starts the management control plane and the manager, with an
// AddressPool "vips" holding pool.
func (h *Harness) StartFleet(pool ...v1.AddressRange) (*Fleet, error) {
	return h.StartFleetWith(FleetOptions{}, pool...)
}

// FleetOptions change how StartFleetWith runs the manager.
type FleetOptions struct {
	// LeaderElect runs the manager as replica "manager-1" with leader
	// election on (StartStandby adds more replicas); otherwise it runs alone
	// without leader election.
	LeaderElect bool
	// AddressQuarantine is the manager's --address-quarantine. Zero, the
	// harness default, disables it, so scenarios can hand an address from one
	// tenant to another at once; a production manager defaults to 10m.
	AddressQuarantine time.Duration
	// XDSInsecure runs xDS in plaintext (manager and proxies with
	// --xds-insecure); by default every proxy connects over mTLS with its
	// fleet's client certificate.
	XDSInsecure bool
	// MetricsAddress is the first replica's --metrics-bind-address; empty serves no metrics.
	MetricsAddress string
}

// StartFleetWith is StartFleet with options.
func (h *Harness) StartFleetWith(opts FleetOptions, pool ...v1.AddressRange) (*Fleet, error) {
	root, err := testenv.ModuleRoot()
	if err != nil {
		return nil, err
	}
	// external-dns's DNSEndpoint and cert-manager's Certificate CRDs, so the
	// manager publishes DNS records and requests certificates.
	mgmt, err := testenv.New(testenv.Options{ExtraCRDDirs: []string{
		filepath.Join(root, "manager", "dns", "testdata", "crds"), filepath.Join(root, "manager", "certs", "testdata", "crds")}})
	if err != nil {
		return nil, err
	}
	h.onClose(func() { _ = mgmt.Stop() })
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	f := &Fleet{h: h, Mgmt: mgmt, XDSAddr: fmt.Sprintf("127.0.0.1:%d", port), insecure: opts.XDSInsecure}
	// The pool and the default fleet exist before the manager starts: the fleet's
	// proxies run here (fleetlb-proxy, exposure None), its shared HTTP/HTTPS VIP
	// comes from the pool, on ports a non-root user may bind.
	ctx := context.Background()
	if err := mgmt.Client.Create(ctx, &v1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: "vips"}, Spec: v1.AddressPoolSpec{Addresses: pool}}); err != nil {
		return nil, err
	}
	if err := mgmt.Client.Create(ctx, &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: v1.DefaultFleetName}, Spec: v1.ProxyFleetSpec{
		Exposure: v1.ExposureNone, AddressPool: "vips",
		HTTP: &v1.FleetListener{Port: HTTPPort}, HTTPS: &v1.FleetListener{Port: HTTPSPort},
	}}); err != nil {
		return nil, err
	}
	if err := mgmt.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: FleetNamespace}}); err != nil {
		return nil, err
	}
	// What tenants may not write (deploy/charts/fleetlb/files/tenant-policy.yaml), as in a real installation.
	if out, err := mgmt.Kubectl(ctx, "apply", "-f", filepath.Join(root, "deploy", "charts", "fleetlb", "files", "tenant-policy.yaml")); err != nil {
		return nil, fmt.Errorf("tenant policy: %w\n%s", err, out)
	}
	u, err := url.Parse(mgmt.Config.Host)
	if err != nil {
		return nil, err
	}
	apiserver := u.Host
	if f.Gate, err = NewGate(apiserver); err != nil {
		return nil, err
	}
	h.onClose(f.Gate.Block)
	kc, err := os.ReadFile(mgmt.Kubeconfig)
	if err != nil {
		return nil, err
	}
	gated := "https://" + f.Gate.Addr()
	managerKubeconfig := filepath.Join(h.Dir, "manager.kubeconfig")
	if err := os.WriteFile(managerKubeconfig, bytes.ReplaceAll(kc, []byte(apiserver), []byte(f.Gate.Addr())), 0o600); err != nil {
		return nil, err
	}
	f.managerArgs = []string{"--kubeconfig", managerKubeconfig, "--tenant-api-server", gated, "--fleet-namespace", FleetNamespace,
		"--metrics-bind-address", "0", "--health-probe-bind-address", "0", "--xds-debounce", "20ms",
		// A released hostname claim holds this long before another tenant gets the name.
		"--hostname-claim-grace", "5s"}
	if opts.XDSInsecure {
		f.managerArgs = append(f.managerArgs, "--xds-insecure")
	} else {
		// Proxies here dial the replicas on loopback addresses.
		f.managerArgs = append(f.managerArgs, "--xds-certificate-hosts", "127.0.0.1,localhost")
	}
	f.managerArgs = append(f.managerArgs, "--backend-deny-cidrs", BackendDenyCIDRs, "--address-quarantine="+opts.AddressQuarantine.String())
	leader := "--leader-elect=false"
	if opts.LeaderElect {
		leader = "--leader-elect=true"
		f.managerArgs = append(f.managerArgs, "--leader-election-namespace", FleetNamespace)
	}
	first := append(slices.Clone(f.managerArgs), "--xds-address", f.XDSAddr, leader, "--replica-name", "manager-1")
	if opts.MetricsAddress != "" {
		first = append(first, "--metrics-bind-address", opts.MetricsAddress) // the last one counts
	}
	if f.Manager, err = h.Start("fleetlb-manager", first...); err != nil {
		return nil, err
	}
	if err := copyFile(mgmt.Kubeconfig, filepath.Join(h.Dir, "management.kubeconfig")); err != nil {
		return nil, err
	}
	return f, nil
}

// StartProxy runs fleetlb-proxy for the default fleet.
func (f *Fleet) StartProxy(delta bool) (*Process, error) {
	return f.StartProxyAt(f.XDSAddr, delta)
}

// StartProxyAt runs fleetlb-proxy for the default fleet against the xDS
// server of one manager replica, over mTLS with the fleet's client
// certificate (unless the fleet runs with XDSInsecure).
func (f *Fleet) StartProxyAt(xdsAddr string, delta bool) (*Process, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	args := []string{"--xds-address", xdsAddr, "--fleet", v1.DefaultFleetName, "--node-id", "proxy-1",
		fmt.Sprintf("--delta=%v", delta), "--admin-address", fmt.Sprintf("127.0.0.1:%d", port)}
	if f.insecure {
		args = append(args, "--xds-insecure")
	} else {
		dir, err := f.ProxyCredentials(v1.DefaultFleetName)
		if err != nil {
			return nil, err
		}
		args = append(args, "--xds-cert-file", filepath.Join(dir, corev1.TLSCertKey), "--xds-key-file", filepath.Join(dir, corev1.TLSPrivateKeyKey),
			"--xds-ca-file", filepath.Join(dir, xdscerts.CAKey))
	}
	return f.h.Start("fleetlb-proxy", args...)
}

// ProxyCredentials waits for the manager to issue a fleet's xDS client
// certificate, reads its Secret from the management apiserver, as an
// operator running proxies outside the cluster would, and writes tls.crt,
// tls.key and ca.crt into a directory, which it returns.
func (f *Fleet) ProxyCredentials(fleet string) (string, error) {
	var sec corev1.Secret
	key := client.ObjectKey{Namespace: FleetNamespace, Name: xdscerts.ClientSecretName(fleet)}
	if err := Eventually(60*time.Second, func() error {
		if err := f.Mgmt.Client.Get(context.Background(), key, &sec); err != nil {
			return err
		}
		for _, k := range []string{corev1.TLSCertKey, corev1.TLSPrivateKeyKey, xdscerts.CAKey} {
			if len(sec.Data[k]) == 0 {
				return fmt.Errorf("secret %s has no %s", key, k)
			}
		}
		return nil
	}); err != nil {
		return "", fmt.Errorf("xDS client certificate of fleet %s: %w", fleet, err)
	}
	dir := filepath.Join(f.h.Dir, "xds-tls-"+fleet)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	for k, b := range sec.Data {
		if err := os.WriteFile(filepath.Join(dir, k), b, 0o600); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// StartStandby starts another manager replica (leader election on; the fleet
// must have been started with LeaderElect) and returns it and the address of
// its xDS server.
func (f *Fleet) StartStandby(name string) (*Process, string, error) {
	port, err := FreePort()
	if err != nil {
		return nil, "", err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p, err := f.h.Start("fleetlb-manager", append(slices.Clone(f.managerArgs),
		"--xds-address", addr, "--leader-elect=true", "--replica-name", name)...)
	return p, addr, err
}

// Tenant is a tenant control plane with its ccm running.
type Tenant struct {
	Name string
	Env  *testenv.Env
	// CCM is the tenant's running fleetlb-ccm.
	CCM *Process
	h   *Harness
}

// AddTenant onboards a tenant through the manager (a Tenant object) and
// starts its ccm with the kubeconfig the manager issued, as an admin would.
// Its hostnames are *.<name>.example.com.
func (f *Fleet) AddTenant(name string) (*Tenant, error) {
	return f.AddTenantWith(name, v1.TenantSpec{AddressPool: "vips", Hostnames: []v1.Hostname{v1.Hostname("*." + name + ".example.com")}})
}

// AddTenantWith is AddTenant with a given Tenant spec (NodeCIDRs when it names none).
func (f *Fleet) AddTenantWith(name string, spec v1.TenantSpec) (*Tenant, error) {
	ctx := context.Background()
	if len(spec.NodeCIDRs) == 0 {
		spec.NodeCIDRs = NodeCIDRs
	}
	if err := f.Mgmt.Client.Create(ctx, &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}); err != nil {
		return nil, err
	}
	var sec corev1.Secret
	if err := Eventually(60*time.Second, func() error {
		// The Secret exists a moment before its kubeconfig: the token is bound to it.
		if err := f.Mgmt.Client.Get(ctx, client.ObjectKey{Namespace: tenant.Namespace(name), Name: tenant.KubeconfigSecretName}, &sec); err != nil {
			return err
		}
		if len(sec.Data[tenant.KubeconfigKey]) == 0 {
			return fmt.Errorf("no kubeconfig in the Secret yet")
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("kubeconfig of tenant %s: %w", name, err)
	}
	kc := filepath.Join(f.h.Dir, name+"-to-management.kubeconfig")
	if err := os.WriteFile(kc, sec.Data[tenant.KubeconfigKey], 0o600); err != nil {
		return nil, err
	}
	crds, err := gatewayCRDs()
	if err != nil {
		return nil, err
	}
	env, err := testenv.New(testenv.Options{NoCRDs: true, ExtraCRDDirs: []string{crds}})
	if err != nil {
		return nil, err
	}
	f.h.onClose(func() { _ = env.Stop() })
	if err := copyFile(env.Kubeconfig, filepath.Join(f.h.Dir, "tenant-"+name+".kubeconfig")); err != nil {
		return nil, err
	}
	ccm, err := f.h.Start("fleetlb-ccm",
		"--kubeconfig", env.Kubeconfig, "--management-kubeconfig", kc, "--cluster-name", name,
		"--leader-elect=false", "--metrics-bind-address", "0", "--health-probe-bind-address", "0")
	if err != nil {
		return nil, err
	}
	return &Tenant{Name: name, Env: env, CCM: ccm, h: f.h}, nil
}

// AddNode creates a Node whose InternalIP is on loopback.
func (tc *Tenant) AddNode(name, ip, zone string) error {
	ctx := context.Background()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{corev1.LabelTopologyZone: zone}}}
	if err := tc.Env.Client.Create(ctx, n); err != nil {
		return err
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
	return tc.Env.Client.Status().Update(ctx, n)
}

// StartHollowPods plays the deployment controller, kubelet, endpointslice
// controller and kube-proxy for the tenant (e2e/hollow): Deployments get
// Ready Pods, and every node port of a Service with a selector answers on
// every Node's address as the Service's Pods, round-robin. Do not combine it
// with ServeNodePorts or ServeCompanion on the same Services: both listen on
// the node ports. It stops with the harness.
func (tc *Tenant) StartHollowPods(opts hollow.Options) (*hollow.Cluster, error) {
	c, err := hollow.Start(context.Background(), tc.Env.Config, opts)
	if err != nil {
		return nil, err
	}
	tc.h.onClose(c.Close)
	return c, nil
}

// ServeNodePorts plays kube-proxy for a Service: an echo backend on every
// given node address and NodePort, answering as that node.
func (tc *Tenant) ServeNodePorts(namespace, svcName string, nodes map[string]string) error {
	var svc corev1.Service
	if err := tc.Env.Client.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: svcName}, &svc); err != nil {
		return err
	}
	return tc.serve(&svc, nodes, "")
}

// ServeHTTPNodePorts is ServeNodePorts with HTTP echo backends (HTTP/1.1 and h2c).
func (tc *Tenant) ServeHTTPNodePorts(namespace, svcName string, nodes map[string]string) error {
	var svc corev1.Service
	if err := tc.Env.Client.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: svcName}, &svc); err != nil {
		return err
	}
	return tc.serve(&svc, nodes, "http")
}

func (tc *Tenant) serve(svc *corev1.Service, nodes map[string]string, protocol string) error {
	for node, ip := range nodes {
		for _, p := range svc.Spec.Ports {
			if p.NodePort == 0 {
				return fmt.Errorf("service %s/%s port %d has no node port", svc.Namespace, svc.Name, p.Port)
			}
			id := echo.Identity{Cluster: tc.Name, Node: node, Service: svc.Namespace + "/" + svc.Name}
			addr := fmt.Sprintf("%s:%d", ip, p.NodePort)
			proto := cmp.Or(protocol, strings.ToLower(string(p.Protocol)))
			if err := tc.h.Backends.Start(tc.Name+"/"+node+"/"+addr, id, proto, addr); err != nil {
				return err
			}
		}
	}
	return nil
}

// Address waits for a tenant Service's load-balancer address.
func (tc *Tenant) Address(namespace, name string, timeout time.Duration) (string, error) {
	var ip string
	err := Eventually(timeout, func() error {
		var svc corev1.Service
		if err := tc.Env.Client.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, &svc); err != nil {
			return err
		}
		ing := svc.Status.LoadBalancer.Ingress
		if len(ing) != 1 || ing[0].IPMode == nil || *ing[0].IPMode != corev1.LoadBalancerIPModeProxy {
			return fmt.Errorf("%s/%s has no address yet (ingress %+v)", namespace, name, ing)
		}
		ip = ing[0].IP
		return nil
	})
	return ip, err
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o600)
}

// StopNodePorts stops every echo backend of one node, as if the node went dark.
func (tc *Tenant) StopNodePorts(node string) error {
	prefix := tc.Name + "/" + node + "/"
	for _, k := range tc.h.Backends.Keys() {
		if strings.HasPrefix(k, prefix) {
			if err := tc.h.Backends.Stop(k); err != nil {
				return err
			}
		}
	}
	return nil
}

// gatewayCRDs is the standard channel of the gateway-api module in go.mod,
// installed in every tenant cluster so the ccm's Gateway controllers run.
var gatewayCRDs = sync.OnceValues(func() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api").Output()
	if err != nil {
		return "", fmt.Errorf("locating sigs.k8s.io/gateway-api: %w", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "config", "crd", "standard"), nil
})

// ServeCompanion waits for the companion NodePort Service the ccm creates for a
// ClusterIP Service used by an Ingress or HTTPRoute ("<svc>-fleetlb") and serves
// HTTP echo backends on its node port.
func (tc *Tenant) ServeCompanion(namespace, svc string, nodes map[string]string, timeout time.Duration) error {
	return tc.ServeCompanionAs(namespace, svc, "http", nodes, timeout)
}

// ServeCompanionAs is ServeCompanion with echo backends of protocol "http" or
// "grpc" (for a GRPCRoute's backend).
func (tc *Tenant) ServeCompanionAs(namespace, svc, protocol string, nodes map[string]string, timeout time.Duration) error {
	return Eventually(timeout, func() error {
		var c corev1.Service
		if err := tc.Env.Client.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: svc + "-fleetlb"}, &c); err != nil {
			return err
		}
		if c.Spec.Type != corev1.ServiceTypeNodePort || len(c.Spec.Ports) == 0 || c.Spec.Ports[0].NodePort == 0 {
			return fmt.Errorf("companion of %s/%s is not ready: %+v", namespace, svc, c.Spec)
		}
		return tc.serve(&c, nodes, protocol)
	})
}
