package snapshot

import (
	"context"
	"fmt"
	"os"
	goruntime "runtime"
	"runtime/pprof"
	"strconv"
	"testing"

	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/envoy/server"
	"github.com/fleetlb/fleetlb/envoy/translate"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// memCache reads like controller-runtime's informer cache (a deep copy of
// every object read, none with client.UnsafeDisableDeepCopy), from objects
// held in memory, so a benchmark measures the builder and not an apiserver.
type memCache struct {
	client.Client // unused: only reads are served
	tenants       []*v1.Tenant
	fleets        []*v1.ProxyFleet
	nodes         map[string]*v1.TenantNodes
	lbs           map[string][]*v1.LoadBalancer
	routes        map[string][]*v1.Route
	secrets       map[string][]*corev1.Secret
	statusWrites  int
}

// Status takes status writes and drops them.
func (m *memCache) Status() client.SubResourceWriter { return statusSink{m} }

type statusSink struct{ m *memCache }

func (s statusSink) Create(context.Context, client.Object, client.Object, ...client.SubResourceCreateOption) error {
	return nil
}
func (s statusSink) Update(context.Context, client.Object, ...client.SubResourceUpdateOption) error {
	s.m.statusWrites++
	return nil
}
func (s statusSink) Patch(context.Context, client.Object, client.Patch, ...client.SubResourcePatchOption) error {
	s.m.statusWrites++
	return nil
}
func (s statusSink) Apply(context.Context, runtime.ApplyConfiguration, ...client.SubResourceApplyOption) error {
	s.m.statusWrites++
	return nil
}

func (m *memCache) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	switch o := obj.(type) {
	case *v1.Tenant:
		for _, t := range m.tenants {
			if t.Name == key.Name {
				t.DeepCopyInto(o)
				return nil
			}
		}
	case *v1.ProxyFleet:
		for _, f := range m.fleets {
			if f.Name == key.Name {
				f.DeepCopyInto(o)
				return nil
			}
		}
	case *v1.TenantNodes:
		if n := m.nodes[key.Namespace]; n != nil {
			n.DeepCopyInto(o)
			return nil
		}
	case *v1.LoadBalancer:
		for _, lb := range m.lbs[key.Namespace] {
			if lb.Name == key.Name {
				*o = *lb // as the cache does with client.UnsafeDisableDeepCopy
				return nil
			}
		}
	case *v1.Route:
		for _, rt := range m.routes[key.Namespace] {
			if rt.Name == key.Name {
				*o = *rt
				return nil
			}
		}
	case *corev1.Secret:
		for _, s := range m.secrets[key.Namespace] {
			if s.Name == key.Name {
				*o = *s
				return nil
			}
		}
	}
	return apierrors.NewNotFound(schema.GroupResource{}, key.Name)
}

func listOf[T any, P interface {
	*T
	DeepCopy() P
}](items []P, opts []client.ListOption) []T {
	var lo client.ListOptions
	lo.ApplyOptions(opts)
	out := make([]T, 0, len(items))
	for _, it := range items {
		if lo.UnsafeDisableDeepCopy != nil && *lo.UnsafeDisableDeepCopy {
			out = append(out, *it)
		} else {
			out = append(out, *it.DeepCopy())
		}
	}
	return out
}

func (m *memCache) List(_ context.Context, list client.ObjectList, opts ...client.ListOption) error {
	var lo client.ListOptions
	lo.ApplyOptions(opts)
	switch l := list.(type) {
	case *v1.TenantList:
		l.Items = listOf(m.tenants, opts)
	case *v1.ProxyFleetList:
		l.Items = listOf(m.fleets, opts)
	case *v1.AddressPoolList:
	case *v1.LoadBalancerList:
		l.Items = listOf(m.lbs[lo.Namespace], opts)
	case *v1.RouteList:
		l.Items = listOf(m.routes[lo.Namespace], opts)
	case *corev1.SecretList:
		l.Items = listOf(m.secrets[lo.Namespace], opts)
	default:
		return fmt.Errorf("memCache: %T", list)
	}
	return nil
}

// benchWorld is n LoadBalancers and n Routes (each its own hostname) over 5 tenants.
func benchWorld(n int) *memCache {
	m := &memCache{nodes: map[string]*v1.TenantNodes{}, lbs: map[string][]*v1.LoadBalancer{}, routes: map[string][]*v1.Route{}, secrets: map[string][]*corev1.Secret{}}
	m.fleets = []*v1.ProxyFleet{{ObjectMeta: metav1.ObjectMeta{Name: v1.DefaultFleetName}, Spec: v1.ProxyFleetSpec{
		VIP: "127.0.60.1", Exposure: v1.ExposureNone, HTTP: &v1.FleetListener{Port: 8080}, HTTPS: &v1.FleetListener{Port: 8443}}}}
	accepted := []metav1.Condition{{Type: v1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: v1.ReasonAccepted}}
	for ti := range 5 {
		name := fmt.Sprint("t", ti)
		ns := tenant.Namespace(name)
		m.tenants = append(m.tenants, &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID(name), Generation: 1},
			Spec: v1.TenantSpec{AddressPool: "p", Hostnames: []v1.Hostname{"*.example.com"}, NodeCIDRs: testNodeCIDRs}})
		m.nodes[ns] = &v1.TenantNodes{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: v1.TenantNodesName, UID: types.UID(ns), Generation: 1},
			Spec: v1.TenantNodesSpec{Cluster: name, Nodes: []v1.TenantNode{
				{Name: "n1", Zone: "z1", Addresses: []v1.IPAddress{v1.IPAddress(fmt.Sprintf("127.0.%d.1", ti+1))}},
				{Name: "n2", Zone: "z2", Addresses: []v1.IPAddress{v1.IPAddress(fmt.Sprintf("127.0.%d.2", ti+1))}}}}}
	}
	for i := range n {
		ns := tenant.Namespace(fmt.Sprint("t", i%5))
		lb := &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprint("lb", i), UID: types.UID(fmt.Sprint("lb", i)), Generation: 1, ResourceVersion: "1"},
			Spec: v1.LoadBalancerSpec{Source: v1.ServiceSource{Cluster: "c", Namespace: "default", Name: "s", UID: "u"},
				Ports: []v1.LoadBalancerPort{{Port: 80, Protocol: v1.ProtocolTCP, NodePort: 30080}}},
			Status: v1.LoadBalancerStatus{Addresses: []v1.Address{{IP: v1.IPAddress(fmt.Sprintf("127.1%d.%d.%d", i>>16, (i>>8)&255, i&255)), IPMode: v1.IPModeProxy}},
				Conditions: accepted}}
		m.lbs[ns] = append(m.lbs[ns], lb)
		host := v1.Hostname(fmt.Sprintf("h%d.example.com", i))
		rt := &v1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprint("rt", i), UID: types.UID(fmt.Sprint("rt", i)), Generation: 1, ResourceVersion: "1",
			CreationTimestamp: metav1.Unix(int64(i), 0)},
			Spec: v1.RouteSpec{Source: v1.RouteSource{Kind: v1.SourceIngress, Cluster: "c", Namespace: "default", Name: "r", UID: "u"},
				Hostnames: []v1.Hostname{host},
				Rules: []v1.RouteRule{{Matches: []v1.RouteMatch{pathMatch(v1.PathPrefix, "/api")}, Backends: []v1.RouteBackend{{ServiceName: "api", NodePort: 30081}}},
					{Backends: []v1.RouteBackend{{ServiceName: "web", NodePort: 30082}}}}},
			Status: v1.RouteStatus{AcceptedHostnames: []v1.Hostname{host}, Conditions: accepted}}
		m.routes[ns] = append(m.routes[ns], rt)
	}
	return m
}

// BenchmarkOneChange measures what one changed object costs the manager
// between the event and the proxies' new configuration at N LoadBalancers +
// N Routes: the fleet's reconcile (model, translation, Set) and the xDS
// server's apply of the Set (validation, hashing, snapshot). Each iteration
// changes one object (alternating objects and tenants): a LoadBalancer's node
// port (its endpoints change), or a Route's path (the shared HTTP route
// configuration, which holds every virtual host, changes).
//
// ACK is the reconcile that follows a change once the proxies acknowledged
// it (only that reconcile is timed): nothing changed but the acknowledged
// generation, and this replica writes status (the changed object becomes
// Programmed; the writes go nowhere).
func BenchmarkOneChange(b *testing.B) {
	for _, kind := range []string{"LoadBalancer", "Route", "ACK"} {
		for _, n := range []int{1000, 5000, 10000} {
			b.Run(kind+"/"+strconv.Itoa(n), func(b *testing.B) { benchOneChange(b, n, kind) })
		}
	}
}

// ackedXDS is the xDS server with the acknowledged generation the benchmark says.
type ackedXDS struct {
	*server.Server
	acked uint64
}

func (x *ackedXDS) AckedGeneration(string) uint64 { return x.acked }

func benchOneChange(b *testing.B, n int, kind string) {
	route, ack := kind == "Route", kind == "ACK"
	m := benchWorld(n)
	srv := server.New(server.Options{Log: logr.Discard()})
	xds := &ackedXDS{Server: srv}
	bld := &Builder{Client: m, XDS: xds, Log: logr.Discard(), BackendDeny: testDeny, WriteStatus: func() bool { return ack }}
	bld.init()
	ctx := context.Background()
	req := reconcileRequest()
	if _, err := bld.Reconcile(ctx, req); err != nil {
		b.Fatal(err)
	}
	srv.Flush()
	if v, _ := srv.Version(v1.DefaultFleetName); v == "" {
		b.Fatalf("no snapshot: %v", srv.LastError(v1.DefaultFleetName))
	}
	if ack {
		// The proxies run the first configuration: every object is Programmed (written once, before the timer).
		xds.acked = bld.gen[v1.DefaultFleetName]
		if _, err := bld.Reconcile(ctx, req); err != nil {
			b.Fatal(err)
		}
		m.statusWrites = 0
	}
	// What the builder, translator and server keep, with the objects (as an informer cache would).
	goruntime.GC()
	var ms goruntime.MemStats
	goruntime.ReadMemStats(&ms)
	heap := ms.HeapAlloc
	b.ReportAllocs()
	stop := loopProfile(b)
	defer stop()
	b.ResetTimer()
	i, rebuilt := 0, 0
	for b.Loop() {
		ns := tenant.Namespace(fmt.Sprint("t", i%5))
		var changed client.Object
		if route {
			j := (i / 5) % len(m.routes[ns])
			rt := m.routes[ns][j].DeepCopy()
			rt.Generation++
			rt.ResourceVersion = strconv.Itoa(int(rt.Generation))
			rt.Spec.Rules[0].Matches = []v1.RouteMatch{pathMatch(v1.PathPrefix, fmt.Sprint("/api", i))}
			m.routes[ns][j], changed = rt, rt
		} else {
			j := (i / 5) % len(m.lbs[ns])
			lb := m.lbs[ns][j].DeepCopy()
			lb.Generation++
			lb.ResourceVersion = strconv.Itoa(int(lb.Generation))
			lb.Spec.Ports[0].NodePort = 30000 + v1.PortNumber(i%500)
			m.lbs[ns][j], changed = lb, lb
		}
		bld.changedInNamespace(ctx, changed) // what the watch handler does
		i++
		before := bld.trans[v1.DefaultFleetName].Last()
		if ack {
			b.StopTimer()
		}
		if _, err := bld.Reconcile(ctx, req); err != nil {
			b.Fatal(err)
		}
		srv.Flush()
		if ack {
			xds.acked = bld.gen[v1.DefaultFleetName] // the proxies run it
			b.StartTimer()
			if _, err := bld.Reconcile(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		rebuilt += differing(before, bld.trans[v1.DefaultFleetName].Last())
		b.StartTimer()
	}
	if ack {
		b.ReportMetric(float64(m.statusWrites)/float64(i), "status-writes/op")
	}
	b.StopTimer()
	// What the proxies are sent (delta xDS): resources that are not the same as before.
	b.ReportMetric(float64(rebuilt)/float64(i), "resources/change")
	b.ReportMetric(float64(heap)/float64(2*n), "heap-B/object")
	if err := srv.LastError(v1.DefaultFleetName); err != nil {
		b.Fatal(err)
	}
}

// differing counts the resources of b that are not (by identity) in a.
func differing(a, b *translate.Output) int {
	n := 0
	for _, pair := range [][2][]cachetypes.Resource{{a.Listeners, b.Listeners}, {a.Routes, b.Routes}, {a.Clusters, b.Clusters}, {a.Endpoints, b.Endpoints}, {a.Secrets, b.Secrets}} {
		if len(pair[0]) == len(pair[1]) { // both in name order
			for i := range pair[0] {
				if pair[0][i] != pair[1][i] {
					n++
				}
			}
			continue
		}
		old := map[cachetypes.Resource]bool{}
		for _, r := range pair[0] {
			old[r] = true
		}
		for _, r := range pair[1] {
			if !old[r] {
				n++
			}
		}
	}
	return n
}

// loopProfile writes a CPU profile of the measured loop alone (not of
// building the world) to $FLEETLB_LOOP_CPUPROFILE, when set.
func loopProfile(b *testing.B) func() {
	path := os.Getenv("FLEETLB_LOOP_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}
