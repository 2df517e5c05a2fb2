package fleet

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr/testr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/envoy/server"
	"github.com/fleetlb/fleetlb/internal/proxy/xdsclient"
	"github.com/fleetlb/fleetlb/internal/testenv"
	"github.com/fleetlb/fleetlb/internal/xdstransport"
	"github.com/fleetlb/fleetlb/manager/xdscerts"
)

// realXDS is the real xDS server over mTLS with the fleet controller
// reading it, in a namespace of its own.
type realXDS struct {
	srv  *server.Server
	ns   string
	addr string
}

func startRealXDS(t *testing.T, ctx context.Context, resync time.Duration) *realXDS {
	t.Helper()
	ns := uniq("fleets")
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	auth := &xdscerts.Authority{Reader: env.Client, Writer: env.Client, Namespace: ns, ServingHosts: []string{"127.0.0.1"}, Log: testr.New(t)}
	if _, err := auth.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	srv := server.New(server.Options{Log: testr.New(t), Debounce: 10 * time.Millisecond, MaxDelay: 100 * time.Millisecond,
		FleetExists: Exists(env.Client)})
	g := grpc.NewServer(xdstransport.ServerOptions(credentials.NewTLS(xdstransport.ServerTLS(auth.Current)))...)
	srv.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	go func() { _ = srv.Run(ctx) }()

	mgr := env.NewManager(t)
	if err := (&Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("fleet"), XDS: srv, Certificates: auth,
		Options: Options{Namespace: ns, XDSAddress: ln.Addr().String(), Resync: resync}}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, mgr)
	return &realXDS{srv: srv, ns: ns, addr: ln.Addr().String()}
}

// connectProxy runs an ADS client for the fleet with its client certificate
// (read from the fleet's Secret, as a mounted volume would give it) until
// the returned stop is called.
func (x *realXDS) connectProxy(t *testing.T, ctx context.Context, fleet string, h xdsclient.Handler) (stop func()) {
	t.Helper()
	dir := t.TempDir()
	testenv.Eventually(t, "client Secret", func() error {
		var s corev1.Secret
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: x.ns, Name: xdscerts.ClientSecretName(fleet)}, &s); err != nil {
			return err
		}
		for k, b := range s.Data {
			if err := os.WriteFile(filepath.Join(dir, k), b, 0o600); err != nil {
				return err
			}
		}
		return nil
	})
	files := xdstransport.ClientFiles{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"),
		CAFile: filepath.Join(dir, "ca.crt"), ServerName: "127.0.0.1"}
	conn, err := grpc.NewClient(x.addr, xdstransport.DialOptions(xdstransport.ClientCredentials(files))...)
	if err != nil {
		t.Fatal(err)
	}
	proxyCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = xdsclient.New(conn, h, xdsclient.Options{Node: &corev3.Node{Id: "proxy-1", Cluster: fleet}}, testr.New(t)).Run(proxyCtx)
	}()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
			_ = conn.Close()
		}
	}
	t.Cleanup(stop)
	return stop
}

func clusters(name string) map[resource.Type][]types.Resource {
	return map[resource.Type][]types.Resource{resource.ClusterType: {&clusterv3.Cluster{
		Name: name, ConnectTimeout: durationpb.New(time.Second), ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
	}}}
}

// TestProgrammedFollowsSnapshotsAndNACKs: with no periodic resync, the
// fleet's Programmed condition follows each new snapshot (False, waiting for
// the new version, while a proxy has not acknowledged it; never "all
// acknowledged" the old one), a refusal (False, ProxyRejected with the
// proxy's detail), and the next acknowledged version (True).
func TestProgrammedFollowsSnapshotsAndNACKs(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	x := startRealXDS(t, ctx, time.Hour)
	f := createFleet(t, &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: uniq("follow")}, Spec: v1.ProxyFleetSpec{Exposure: v1.ExposureNone}})

	// The proxy accepts cluster "good-*", refuses "bad", and holds "slow"
	// (no ACK, no NACK) until released.
	release := make(chan struct{})
	handler := xdsclient.HandlerFunc(func(typeURL string, rs map[string]proto.Message) error {
		for name := range rs {
			switch {
			case name == "bad":
				return errors.New("cluster bad: refused by the test proxy")
			case name == "slow":
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
		}
		return nil
	})
	x.srv.Set(f.Name, clusters("good-1"))
	x.connectProxy(t, ctx, f.Name, handler)
	condition(t, f.Name, v1.ConditionProgrammed, metav1.ConditionTrue, v1.ReasonProgrammed)
	v1Version, _ := x.srv.Version(f.Name)

	// A new snapshot the proxy has not acknowledged: Pending, naming the new version.
	x.srv.Set(f.Name, clusters("slow"))
	got := condition(t, f.Name, v1.ConditionProgrammed, metav1.ConditionFalse, v1.ReasonPending)
	slowVersion, _ := x.srv.Version(f.Name)
	if c := meta.FindStatusCondition(got.Status.Conditions, v1.ConditionProgrammed); !strings.Contains(c.Message, slowVersion) ||
		got.Status.ConfigVersion != v1Version {
		t.Errorf("waiting: message %q, configVersion %s; want version %s named and %s kept", c.Message, got.Status.ConfigVersion, slowVersion, v1Version)
	}
	close(release)
	condition(t, f.Name, v1.ConditionProgrammed, metav1.ConditionTrue, v1.ReasonProgrammed)

	// A refusal: ProxyRejected with the proxy's detail, and a warning event.
	x.srv.Set(f.Name, clusters("bad"))
	got = condition(t, f.Name, v1.ConditionProgrammed, metav1.ConditionFalse, ReasonProxyRejected)
	if c := meta.FindStatusCondition(got.Status.Conditions, v1.ConditionProgrammed); !strings.Contains(c.Message, "refused by the test proxy") ||
		!strings.Contains(c.Message, "proxy-1") {
		t.Errorf("refused: message %q", c.Message)
	}

	// The next good version is acknowledged: True again.
	x.srv.Set(f.Name, clusters("good-2"))
	got = condition(t, f.Name, v1.ConditionProgrammed, metav1.ConditionTrue, v1.ReasonProgrammed)
	if now, _ := x.srv.Version(f.Name); got.Status.ConfigVersion != now {
		t.Errorf("configVersion %s, want %s", got.Status.ConfigVersion, now)
	}
}
