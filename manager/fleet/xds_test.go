package fleet

import (
	"context"
	"net"
	"os"
	"path/filepath"
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

// TestFleetStatusFromTheRealXDSServer connects a real ADS client, over mTLS
// with the client certificate the controller wrote into the fleet's Secret,
// to the real xDS server and reads connectedProxies, configVersion and
// Programmed back from the fleet's status.
func TestFleetStatusFromTheRealXDSServer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
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
	defer g.Stop()
	go func() { _ = srv.Run(ctx) }()

	mgr := env.NewManager(t)
	// The server does not report connects and disconnects (no ProxyNotifier):
	// the count is refreshed every Resync.
	if err := (&Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("fleet"), XDS: srv, Certificates: auth,
		Options: Options{Namespace: ns, XDSAddress: ln.Addr().String(), Resync: 200 * time.Millisecond}}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, mgr)
	f := createFleet(t, &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: uniq("real")}, Spec: v1.ProxyFleetSpec{Exposure: v1.ExposureNone}})
	condition(t, f.Name, v1.ConditionProgrammed, metav1.ConditionFalse, v1.ReasonNoProxies)

	gen := srv.Set(f.Name, map[resource.Type][]types.Resource{resource.ClusterType: {&clusterv3.Cluster{
		Name: "c", ConnectTimeout: durationpb.New(time.Second), ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
	}}})
	// The proxy's files are the fleet's Secret, as a mounted volume would give them.
	dir := t.TempDir()
	testenv.Eventually(t, "client Secret", func() error {
		var s corev1.Secret
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: xdscerts.ClientSecretName(f.Name)}, &s); err != nil {
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
	conn, err := grpc.NewClient(ln.Addr().String(), xdstransport.DialOptions(xdstransport.ClientCredentials(files))...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	proxyCtx, stopProxy := context.WithCancel(ctx)
	done := make(chan struct{})
	accept := xdsclient.HandlerFunc(func(string, map[string]proto.Message) error { return nil })
	go func() {
		defer close(done)
		_ = xdsclient.New(conn, accept, xdsclient.Options{Node: &corev3.Node{Id: "proxy-1", Cluster: f.Name}}, testr.New(t)).Run(proxyCtx)
	}()

	got := condition(t, f.Name, v1.ConditionProgrammed, metav1.ConditionTrue, v1.ReasonProgrammed)
	version, served := srv.Version(f.Name)
	if served < gen || got.Status.ConfigVersion != version || got.Status.ConnectedProxies != 1 {
		t.Errorf("status connected=%d version=%q, want 1 and %q (generation %d)", got.Status.ConnectedProxies, got.Status.ConfigVersion, version, served)
	}

	stopProxy()
	<-done
	got = condition(t, f.Name, v1.ConditionProgrammed, metav1.ConditionFalse, v1.ReasonNoProxies)
	if got.Status.ConnectedProxies != 0 || got.Status.ConfigVersion != version {
		t.Errorf("after the proxy left: connected=%d version=%q, want 0 and the last acknowledged %q", got.Status.ConnectedProxies, got.Status.ConfigVersion, version)
	}
	c := meta.FindStatusCondition(got.Status.Conditions, v1.ConditionReady)
	if c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("Ready %+v for an exposure None fleet", c)
	}
	var cm corev1.ConfigMap
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: ObjectName(f.Name)}, &cm); err != nil {
		t.Errorf("bootstrap ConfigMap of an exposure None fleet: %v", err)
	}
}
