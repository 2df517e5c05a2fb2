package snapshot

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr/testr"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/envoy/translate"
	"github.com/fleetlb/fleetlb/internal/testenv"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// lbFor is an admitted LoadBalancer of a tenant, created age seconds after epoch.
func lbFor(t *testing.T, tenantName, name, vip string, port int32, age int, src v1.ServiceSource) admittedLB {
	t.Helper()
	lb := &v1.LoadBalancer{
		ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-" + tenantName, Name: name, CreationTimestamp: metav1.NewTime(epoch.Add(time.Duration(age) * time.Second))},
		Spec:       v1.LoadBalancerSpec{Source: src, Ports: []v1.LoadBalancerPort{{Port: v1.PortNumber(port), Protocol: v1.ProtocolTCP, NodePort: 30080}}},
		Status:     v1.LoadBalancerStatus{Addresses: []v1.Address{{IP: v1.IPAddress(vip), IPMode: v1.IPModeProxy}}},
	}
	nodes := &v1.TenantNodes{Spec: v1.TenantNodesSpec{Cluster: tenantName, Nodes: []v1.TenantNode{{Name: "n1", Addresses: []v1.IPAddress{"127.0.1.1"}}}}}
	a, err := fromLoadBalancer(tenantName, lb, nodes)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// Two LoadBalancers that claim the same spec.source (in one tenant or in two)
// used to give two Envoy clusters one name, so the fleet's translation failed
// and no tenant's change was served. Names now come from the management
// objects, which are unique.
func TestSameSourceDoesNotCollide(t *testing.T) {
	src := v1.ServiceSource{Cluster: "c", Namespace: "default", Name: "web", UID: "u"}
	lbs := []admittedLB{
		lbFor(t, "a", "one", "127.0.40.1", 80, 0, src),
		lbFor(t, "a", "two", "127.0.40.2", 80, 1, src),
		lbFor(t, "b", "one", "127.0.40.3", 80, 2, src),
	}
	f := assemble("default", nil, nil, nil, lbs)
	if _, err := translate.Translate(f); err != nil {
		t.Fatalf("fleet does not translate: %v", err)
	}
	var names []string
	for _, b := range f.Backends {
		names = append(names, b.Name)
	}
	if want := []string{"a/one/tcp/80", "a/two/tcp/80", "b/one/tcp/80"}; !slices.Equal(names, want) {
		t.Fatalf("backends %v, want %v", names, want)
	}
}

// A conflict between objects that are each valid (two LoadBalancers on one
// VIP and port, which IPAM should never allow) leaves out the younger one;
// the older one and everyone else are still served.
func TestConflictExcludesTheYoungerObject(t *testing.T) {
	src := func(n string) v1.ServiceSource {
		return v1.ServiceSource{Cluster: "c", Namespace: "default", Name: n, UID: n}
	}
	older := lbFor(t, "a", "web", "127.0.40.1", 80, 0, src("web"))
	other := lbFor(t, "c", "db", "127.0.40.9", 5432, 1, src("db"))
	younger := lbFor(t, "b", "squat", "127.0.40.1", 80, 2, src("squat"))
	also := lbFor(t, "b", "late", "127.0.40.5", 443, 3, src("late")) // after the culprit: still served
	lbs := []admittedLB{younger, also, older, other}

	if _, err := translate.Translate(assemble("default", nil, nil, nil, lbs)); err == nil {
		t.Fatal("two services on one VIP and port translated: the test does not test a conflict")
	}
	f, excluded := resolveConflicts("default", nil, nil, nil, lbs)
	if len(excluded) != 1 || excluded[0] != client.Object(younger.lb) {
		t.Fatalf("excluded %v, want only the younger load balancer", excluded)
	}
	var got []string
	for _, s := range f.L4 {
		got = append(got, s.Ref.Namespace+"/"+s.Ref.Name)
	}
	slices.Sort(got)
	if want := []string{"tenant-a/web", "tenant-b/late", "tenant-c/db"}; !slices.Equal(got, want) {
		t.Fatalf("served %v, want %v", got, want)
	}
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	if msg := conflictMessage(younger.lb, "default"); slices.ContainsFunc([]string{"tenant-a", "web", "a/"}, func(s string) bool { return strings.Contains(msg, s) }) {
		t.Fatalf("message %q names the other tenant's object", msg)
	}
}

// Hostile LoadBalancers against a real API server and xDS server: a copy of
// another LoadBalancer's spec.source and a squat on another tenant's VIP and
// port. Neither stops the fleet: the victim's objects, and a change it makes
// meanwhile, are served and Programmed; only the squat is left out, with a
// reason that names nobody else.
func TestHostileLoadBalancersDoNotFreezeTheFleet(t *testing.T) {
	env, conn := startTwoTenants(t)
	ctx := context.Background()
	admit := func(tenantName, name, source, vip string, port int32) {
		t.Helper()
		lb := &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: tenant.Namespace(tenantName), Name: name}, Spec: v1.LoadBalancerSpec{
			Source: v1.ServiceSource{Cluster: "cluster-" + tenantName, Namespace: "default", Name: source, UID: "u-" + name},
			Ports:  []v1.LoadBalancerPort{{Port: v1.PortNumber(port), Protocol: v1.ProtocolTCP, NodePort: 30080}},
		}}
		if err := env.Client.Create(ctx, lb); err != nil {
			t.Fatal(err)
		}
		lb.Status.Addresses = []v1.Address{{IP: v1.IPAddress(vip), IPMode: v1.IPModeProxy}}
		lb.Status.Conditions = []metav1.Condition{{Type: v1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: v1.ReasonAccepted, LastTransitionTime: metav1.Now(), ObservedGeneration: lb.Generation}}
		if err := env.Client.Status().Update(ctx, lb); err != nil {
			t.Fatal(err)
		}
	}
	programmed := func(tenantName, name string) *metav1.Condition {
		var lb v1.LoadBalancer
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: tenant.Namespace(tenantName), Name: name}, &lb); err != nil {
			return nil
		}
		return meta.FindStatusCondition(lb.Status.Conditions, v1.ConditionProgrammed)
	}

	p := &ackingProxy{last: map[string]*discoveryv3.DiscoveryResponse{}}
	p.run(t, conn, v1.DefaultFleetName)

	admit("a", "web", "web", "127.0.40.1", 80)
	admit("a", "web-copy", "web", "127.0.40.2", 80) // the same spec.source
	admit("b", "squat", "squat", "127.0.40.1", 80)  // a's VIP and port
	admit("b", "fine", "fine", "127.0.40.3", 443)
	testenv.Eventually(t, "the squat left out", func() error {
		c := programmed("b", "squat")
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != ReasonConflicted {
			return fmt.Errorf("squat: %+v", c)
		}
		if strings.Contains(c.Message, "tenant-a") || strings.Contains(c.Message, "web") {
			return fmt.Errorf("the message names the victim: %q", c.Message)
		}
		return nil
	})
	admit("a", "new", "new", "127.0.40.4", 8080) // the victim's change during the attack
	testenv.Eventually(t, "everyone else programmed", func() error {
		for _, o := range [][2]string{{"a", "web"}, {"a", "web-copy"}, {"b", "fine"}, {"a", "new"}} {
			if c := programmed(o[0], o[1]); c == nil || c.Status != metav1.ConditionTrue {
				return fmt.Errorf("%s/%s: %+v", o[0], o[1], c)
			}
		}
		ls := p.listeners(t)
		for _, want := range []string{"l4/tcp/127.0.40.1:80", "l4/tcp/127.0.40.2:80", "l4/tcp/127.0.40.3:443", "l4/tcp/127.0.40.4:8080"} {
			if _, ok := ls[want]; !ok {
				return fmt.Errorf("listeners %v, want %s", keys(ls), want)
			}
		}
		if tp := tcpProxyCluster(t, ls["l4/tcp/127.0.40.1:80"]); tp != "a/web/tcp/80" {
			return fmt.Errorf("127.0.40.1:80 goes to %q, want the victim's a/web/tcp/80", tp)
		}
		return nil
	})
}

func tcpProxyCluster(t *testing.T, l *listenerv3.Listener) string {
	for _, f := range l.GetFilterChains()[0].GetFilters() {
		var tp tcpproxyv3.TcpProxy
		if f.GetTypedConfig().UnmarshalTo(&tp) == nil {
			return tp.GetCluster()
		}
	}
	return ""
}

// refusingProxy is a proxy that refuses (NACKs) every CDS response holding a
// cluster whose name contains refuse, as a proxy refuses what admission did
// not foresee, and ACKs everything else.
func refusingProxy(t *testing.T, conn *grpc.ClientConn, fleet, refuse string, named bool) *ackingProxy {
	p := &ackingProxy{last: map[string]*discoveryv3.DiscoveryResponse{}}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: "proxy-1", Cluster: fleet}
	for _, typ := range []string{resource.ListenerType, resource.ClusterType} {
		if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typ}); err != nil {
			t.Fatal(err)
		}
	}
	go func() {
		acked := map[string]string{}
		for {
			r, err := st.Recv()
			if err != nil {
				return
			}
			var bad string
			for _, a := range r.Resources {
				if n := resourceName(a.Value, a.TypeUrl); r.TypeUrl == resource.ClusterType && strings.Contains(n, refuse) {
					bad = n
				}
			}
			if bad != "" && !named {
				bad = "a cluster" // as Envoy often says it: no resource name in the message
			}
			if bad != "" {
				_ = st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, VersionInfo: acked[r.TypeUrl], ResponseNonce: r.Nonce,
					ErrorDetail: &status.Status{Message: fmt.Sprintf("cluster %q: not supported", bad)}})
				continue
			}
			p.mu.Lock()
			p.last[r.TypeUrl] = r
			p.mu.Unlock()
			acked[r.TypeUrl] = r.VersionInfo
			_ = st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce})
			if r.TypeUrl == resource.ClusterType {
				var names []string
				for _, a := range r.Resources {
					names = append(names, resourceName(a.Value, a.TypeUrl))
				}
				_ = st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNames: names})
			}
		}
	}()
	return p
}

// A configuration the proxies refuse although admission let it through stays
// with its tenant: the object behind the NACK is found (here among two that
// changed at once), left out with ProxyRejected and the proxy's reason, and
// every other object, including a change the victim makes afterwards, is
// served and Programmed.
func TestNACKIsContainedToItsObject(t *testing.T) {
	t.Run("named in the refusal", func(t *testing.T) { testNACKContained(t, true) })
	t.Run("found by elimination", func(t *testing.T) { testNACKContained(t, false) })
}

func testNACKContained(t *testing.T, named bool) {
	env, conn := startTwoTenants(t)
	ctx := context.Background()
	admit := func(tenantName, name, vip string) {
		t.Helper()
		lb := &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: tenant.Namespace(tenantName), Name: name}, Spec: v1.LoadBalancerSpec{
			Source: v1.ServiceSource{Cluster: "cluster-" + tenantName, Namespace: "default", Name: name, UID: "u-" + name},
			Ports:  []v1.LoadBalancerPort{{Port: 80, Protocol: v1.ProtocolTCP, NodePort: 30080}},
		}}
		if err := env.Client.Create(ctx, lb); err != nil {
			t.Fatal(err)
		}
		lb.Status.Addresses = []v1.Address{{IP: v1.IPAddress(vip), IPMode: v1.IPModeProxy}}
		lb.Status.Conditions = []metav1.Condition{{Type: v1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: v1.ReasonAccepted, LastTransitionTime: metav1.Now(), ObservedGeneration: lb.Generation}}
		if err := env.Client.Status().Update(ctx, lb); err != nil {
			t.Fatal(err)
		}
	}
	programmed := func(tenantName, name string) *metav1.Condition {
		var lb v1.LoadBalancer
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: tenant.Namespace(tenantName), Name: name}, &lb); err != nil {
			return nil
		}
		return meta.FindStatusCondition(lb.Status.Conditions, v1.ConditionProgrammed)
	}
	allProgrammed := func(objs ...[2]string) func() error {
		return func() error {
			for _, o := range objs {
				if c := programmed(o[0], o[1]); c == nil || c.Status != metav1.ConditionTrue {
					return fmt.Errorf("%s/%s: %+v", o[0], o[1], c)
				}
			}
			return nil
		}
	}
	p := refusingProxy(t, conn, v1.DefaultFleetName, "evil", named)

	admit("a", "web", "127.0.40.1")
	testenv.Eventually(t, "web programmed", allProgrammed([2]string{"a", "web"}))
	// Two changes in one generation; the proxy refuses one of them.
	admit("b", "evil", "127.0.40.2")
	admit("a", "web2", "127.0.40.3")
	testenv.Eventually(t, "the culprit rejected, the rest programmed", func() error {
		c := programmed("b", "evil")
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != ReasonProxyRejected || !strings.Contains(c.Message, "not supported") {
			return fmt.Errorf("evil: %+v", c)
		}
		return allProgrammed([2]string{"a", "web"}, [2]string{"a", "web2"})()
	})
	admit("a", "web3", "127.0.40.4")
	testenv.Eventually(t, "the victim's next change programmed", allProgrammed([2]string{"a", "web3"}))
	ls := p.listeners(t)
	for _, want := range []string{"l4/tcp/127.0.40.1:80", "l4/tcp/127.0.40.3:80", "l4/tcp/127.0.40.4:80"} {
		if _, ok := ls[want]; !ok {
			t.Fatalf("listeners %v, want %s", keys(ls), want)
		}
	}
	if _, ok := ls["l4/tcp/127.0.40.2:80"]; ok {
		t.Fatal("the refused load balancer is still in the configuration")
	}
}

// startTwoTenants runs the builder against a real API server and an xDS
// server, with tenants a and b, each with one node, and returns the API
// server and a client connection to the xDS server.
func startTwoTenants(t *testing.T) (*testenv.Env, *grpc.ClientConn) {
	t.Helper()
	env := testenv.Start(t, testenv.Options{})
	xds, conn := startXDS(t)
	mgr := env.NewManager(t)
	if err := (&Builder{Client: mgr.GetClient(), XDS: xds, Log: testr.New(t)}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, mgr)
	for _, name := range []string{"a", "b"} {
		ns := tenant.Namespace(name)
		for _, o := range []client.Object{
			&v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.TenantSpec{AddressPool: "p"}},
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
			&v1.TenantNodes{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: v1.TenantNodesName},
				Spec: v1.TenantNodesSpec{Cluster: "cluster-" + name, Nodes: []v1.TenantNode{{Name: "n1", Addresses: []v1.IPAddress{"127.0.1.1"}}}}},
		} {
			if err := env.Client.Create(context.Background(), o); err != nil {
				t.Fatal(err)
			}
		}
	}
	return env, conn
}
