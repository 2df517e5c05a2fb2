// Package e2e runs the real binaries against real control planes: a
// management cluster and tenant clusters (kube-apiserver + etcd each), the
// fleetlb-manager, one fleetlb-ccm per tenant, all as separate processes.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/testenv"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds the three commands once per test process.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		root, err := testenv.ModuleRoot()
		if err != nil {
			buildErr = err
			return
		}
		if binDir, err = os.MkdirTemp("", "fleetlb-e2e-bin-"); err != nil {
			buildErr = err
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./cmd/fleetlb-manager", "./cmd/fleetlb-ccm", "./cmd/fleetlb-proxy")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building the binaries: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// process is a running binary whose output is kept for failure reports.
type process struct {
	name string
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

// start runs a binary until the test ends (SIGTERM, then SIGKILL after 10 s).
func start(t *testing.T, name string, args ...string) *process {
	t.Helper()
	p := &process{name: name, out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(filepath.Join(binaries(t), name), args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("--- %s output ---\n%s", name, p.out.String())
		}
	})
	return p
}

func (p *process) stop() {
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

// freePort returns a loopback port free at the time of the call.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// eventually retries f (bounded) until it succeeds.
func eventually(t *testing.T, what string, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}

// fleet is a management cluster with the manager running.
type fleet struct {
	mgmt    *testenv.Env
	xdsAddr string
}

func startFleet(t *testing.T, pool ...v1.AddressRange) *fleet {
	t.Helper()
	mgmt := testenv.Start(t, testenv.Options{})
	xds := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	start(t, "fleetlb-manager",
		"--kubeconfig", mgmt.Kubeconfig, "--tenant-api-server", mgmt.Config.Host,
		"--xds-address", xds, "--leader-elect=false",
		"--metrics-bind-address", "0", "--health-probe-bind-address", "0", "--xds-debounce", "20ms")
	ctx := context.Background()
	if err := mgmt.Client.Create(ctx, &v1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: "vips"}, Spec: v1.AddressPoolSpec{Addresses: pool}}); err != nil {
		t.Fatal(err)
	}
	return &fleet{mgmt: mgmt, xdsAddr: xds}
}

// tenantCluster is a tenant control plane with its ccm running.
type tenantCluster struct {
	name string
	env  *testenv.Env
}

// addTenant onboards a tenant through the manager and starts its ccm with
// the kubeconfig the manager issued, exactly as an admin would.
func (f *fleet) addTenant(t *testing.T, name string) *tenantCluster {
	t.Helper()
	ctx := context.Background()
	if err := f.mgmt.Client.Create(ctx, &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.TenantSpec{AddressPool: "vips"}}); err != nil {
		t.Fatal(err)
	}
	var sec corev1.Secret
	eventually(t, "kubeconfig of tenant "+name, 60*time.Second, func() error {
		return f.mgmt.Client.Get(ctx, client.ObjectKey{Namespace: tenant.Namespace(name), Name: tenant.KubeconfigSecretName}, &sec)
	})
	kc := filepath.Join(t.TempDir(), name+"-mgmt.kubeconfig")
	if err := os.WriteFile(kc, sec.Data[tenant.KubeconfigKey], 0o600); err != nil {
		t.Fatal(err)
	}
	env := testenv.Start(t, testenv.Options{NoCRDs: true})
	start(t, "fleetlb-ccm",
		"--kubeconfig", env.Kubeconfig, "--management-kubeconfig", kc, "--cluster-name", name,
		"--leader-elect=false", "--metrics-bind-address", "0", "--health-probe-bind-address", "0")
	return &tenantCluster{name: name, env: env}
}

// addNode creates a Node whose InternalIP is on loopback.
func (tc *tenantCluster) addNode(t *testing.T, name, ip, zone string) {
	t.Helper()
	ctx := context.Background()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{corev1.LabelTopologyZone: zone}}}
	if err := tc.env.Client.Create(ctx, n); err != nil {
		t.Fatal(err)
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
	if err := tc.env.Client.Status().Update(ctx, n); err != nil {
		t.Fatal(err)
	}
}
