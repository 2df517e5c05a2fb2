package snapshot

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr/testr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/envoy/server"
	"github.com/fleetlb/fleetlb/internal/testenv"
	"github.com/fleetlb/fleetlb/manager/backends"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// ackingProxy subscribes to LDS, CDS and EDS like a proxy and ACKs every
// response, remembering the newest resources of each type.
type ackingProxy struct {
	mu   sync.Mutex
	last map[string]*discoveryv3.DiscoveryResponse
}

func (p *ackingProxy) run(t *testing.T, conn *grpc.ClientConn, fleet string) {
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
		for {
			r, err := st.Recv()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.last[r.TypeUrl] = r
			p.mu.Unlock()
			_ = st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce})
			if r.TypeUrl == resource.ClusterType {
				// EDS for the clusters CDS named, as Envoy does.
				var names []string
				for _, a := range r.Resources {
					names = append(names, resourceName(a.Value, a.TypeUrl))
				}
				_ = st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNames: names})
			}
		}
	}()
}

func (p *ackingProxy) listeners(t *testing.T) map[string]*listenerv3.Listener {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]*listenerv3.Listener{}
	if r := p.last[resource.ListenerType]; r != nil {
		for _, a := range r.Resources {
			var l listenerv3.Listener
			if err := a.UnmarshalTo(&l); err != nil {
				t.Fatal(err)
			}
			out[l.Name] = &l
		}
	}
	return out
}

func (p *ackingProxy) endpoints(t *testing.T) map[string]*endpointv3.ClusterLoadAssignment {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]*endpointv3.ClusterLoadAssignment{}
	if r := p.last[resource.EndpointType]; r != nil {
		for _, a := range r.Resources {
			var c endpointv3.ClusterLoadAssignment
			if err := a.UnmarshalTo(&c); err != nil {
				t.Fatal(err)
			}
			out[c.ClusterName] = &c
		}
	}
	return out
}

// startXDS runs an xDS server on loopback until the test ends and returns
// it with a client connection to it. Plaintext: these tests are about
// snapshots; envoy/server tests mTLS.
func startXDS(t *testing.T) (*server.Server, *grpc.ClientConn) {
	t.Helper()
	xds := server.New(server.Options{Log: testr.New(t), Debounce: 20 * time.Millisecond, MaxDelay: 200 * time.Millisecond, Insecure: true})
	g := grpc.NewServer()
	xds.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = xds.Run(ctx) }()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return xds, conn
}

// The builder tests' tenants have their nodes on 127.0.x.x: their nodeCIDRs
// allow that, and the deny-list keeps only 127.0.0.1 (and link-local) out.
var (
	testDeny      = backends.MustParsePrefixes("127.0.0.1/32", "169.254.0.0/16")
	testNodeCIDRs = []v1.CIDR{"127.0.0.0/16"}
)

func TestLoadBalancersAreServedAndProgrammedAfterAck(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	ctx := context.Background()

	xds, conn := startXDS(t)

	mgr := env.NewManager(t)
	b := &Builder{Client: mgr.GetClient(), XDS: xds, Log: testr.New(t), BackendDeny: testDeny}
	if err := b.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, mgr)

	// Tenant a with two nodes in two zones, and two admitted LoadBalancers.
	// A third node's addresses are each refused: the deny-list, the pool of
	// the VIPs, outside the tenant's nodeCIDRs.
	if err := env.Client.Create(ctx, &v1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec: v1.AddressPoolSpec{Addresses: []v1.AddressRange{"127.0.40.0/24"}}}); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: v1.TenantSpec{AddressPool: "p", NodeCIDRs: []v1.CIDR{"127.0.0.0/8"}}}); err != nil {
		t.Fatal(err)
	}
	ns := tenant.Namespace("a")
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, &v1.TenantNodes{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: v1.TenantNodesName},
		Spec: v1.TenantNodesSpec{Cluster: "cluster-a", Nodes: []v1.TenantNode{
			{Name: "n1", Addresses: []v1.IPAddress{"127.0.1.1"}, Zone: "z1"},
			{Name: "n2", Addresses: []v1.IPAddress{"127.0.1.2"}, Zone: "z2"},
			{Name: "rogue", Addresses: []v1.IPAddress{"127.0.0.1", "169.254.169.254", "127.0.40.1", "10.9.9.9"}, Zone: "z3"},
		}}}); err != nil {
		t.Fatal(err)
	}
	admit := func(name, vip string, mutate func(*v1.LoadBalancer)) {
		lb := &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: v1.LoadBalancerSpec{
			Source: v1.ServiceSource{Cluster: "cluster-a", Namespace: "default", Name: name, UID: "u"},
			Ports:  []v1.LoadBalancerPort{{Port: 80, Protocol: v1.ProtocolTCP, NodePort: 30080}},
		}}
		if mutate != nil {
			mutate(lb)
		}
		if err := env.Client.Create(ctx, lb); err != nil {
			t.Fatal(err)
		}
		lb.Status.Addresses = []v1.Address{{IP: v1.IPAddress(vip), IPMode: v1.IPModeProxy}}
		lb.Status.Conditions = []metav1.Condition{{Type: v1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: v1.ReasonAccepted, LastTransitionTime: metav1.Now(), ObservedGeneration: lb.Generation}}
		if err := env.Client.Status().Update(ctx, lb); err != nil {
			t.Fatal(err)
		}
	}
	admit("web", "127.0.40.1", nil)
	// Not something the data plane can do (a PROXY header on UDP): it must not hold back "web".
	admit("dns", "127.0.40.2", func(lb *v1.LoadBalancer) {
		lb.Spec.Ports = []v1.LoadBalancerPort{{Port: 53, Protocol: v1.ProtocolUDP, NodePort: 30053}}
		lb.Spec.ProxyProtocol = v1.ProxyProtocolV1
	})

	programmed := func(name string) *metav1.Condition {
		var lb v1.LoadBalancer
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &lb); err != nil {
			return nil
		}
		return meta.FindStatusCondition(lb.Status.Conditions, v1.ConditionProgrammed)
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if ok() {
				return
			}
		}
		t.Fatalf("timed out waiting for %s", what)
	}

	// No proxy connected yet: served, but not Programmed.
	waitFor("web pending", func() bool { c := programmed("web"); return c != nil && c.Reason == v1.ReasonPending })
	waitFor("dns refused", func() bool { c := programmed("dns"); return c != nil && c.Reason == v1.ReasonInvalidSpec })
	if c := programmed("dns"); c.Status != metav1.ConditionFalse || c.Message == "" {
		t.Fatalf("dns condition %+v", c)
	}

	p := &ackingProxy{last: map[string]*discoveryv3.DiscoveryResponse{}}
	p.run(t, conn, v1.DefaultFleetName)

	waitFor("web programmed", func() bool { c := programmed("web"); return c != nil && c.Status == metav1.ConditionTrue })
	ls := p.listeners(t)
	if _, ok := ls["l4/tcp/127.0.40.1:80"]; !ok || len(ls) != 1 {
		t.Fatalf("listeners %v, want only l4/tcp/127.0.40.1:80", keys(ls))
	}
	waitFor("endpoints", func() bool {
		cla := p.endpoints(t)["a/web/tcp/80"]
		if cla == nil || len(cla.Endpoints) != 2 {
			return false
		}
		for i, zone := range []string{"z1", "z2"} {
			loc := cla.Endpoints[i]
			ep := loc.LbEndpoints[0].GetEndpoint().Address.GetSocketAddress()
			if loc.Locality.Zone != zone || loc.Locality.Region != "cluster-a" || ep.GetPortValue() != 30080 || ep.Address != fmt.Sprintf("127.0.1.%d", i+1) {
				return false
			}
		}
		return true
	})
	// The rogue node's refused addresses were never served.
	if cla := p.endpoints(t)["a/web/tcp/80"]; len(cla.Endpoints) != 2 || len(cla.Endpoints[0].LbEndpoints) != 1 || len(cla.Endpoints[1].LbEndpoints) != 1 {
		t.Fatalf("endpoints %v", cla.Endpoints)
	}

	// The admin allows 10.0.0.0/8 too: the rogue node's 10.9.9.9 is served, its
	// denied and pool addresses still are not.
	var tn v1.Tenant
	if err := env.Client.Get(ctx, client.ObjectKey{Name: "a"}, &tn); err != nil {
		t.Fatal(err)
	}
	tn.Spec.NodeCIDRs = append(tn.Spec.NodeCIDRs, "10.0.0.0/8")
	if err := env.Client.Update(ctx, &tn); err != nil {
		t.Fatal(err)
	}
	waitFor("10.9.9.9 served", func() bool {
		cla := p.endpoints(t)["a/web/tcp/80"]
		if cla == nil || len(cla.Endpoints) != 3 {
			return false
		}
		z3 := cla.Endpoints[2]
		return z3.Locality.Zone == "z3" && len(z3.LbEndpoints) == 1 &&
			z3.LbEndpoints[0].GetEndpoint().Address.GetSocketAddress().Address == "10.9.9.9"
	})
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// resourceName reads the name of a cluster from its Any payload.
func resourceName(value []byte, _ string) string {
	var c clusterv3.Cluster
	if err := proto.Unmarshal(value, &c); err != nil {
		return ""
	}
	return c.Name
}
