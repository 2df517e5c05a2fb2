package snapshot

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/envoy/server"
	"github.com/fleetlb/fleetlb/envoy/translate"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// world is a management cluster's objects in a fake client, changed at
// random, and the builder that follows it incrementally.
type world struct {
	t       *testing.T
	ctx     context.Context
	c       client.Client
	rng     *rand.Rand
	certs   []*corev1.Secret // TLS data to copy into Secrets
	tenants []string
	b       *Builder
	xds     *recorder
	n       int
	writes  int // Programmed conditions written
	// addresses LoadBalancers draw from: few make conflicts (the full
	// path), many make them rare (the incremental path).
	addresses int
}

func newWorld(t *testing.T, seed uint64, certs []*corev1.Secret) *world {
	scheme := runtime.NewScheme()
	if err := v1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	order := rand.New(rand.NewPCG(seed, 11))
	c := fake.NewClientBuilder().WithScheme(scheme).
		WithStatusSubresource(&v1.LoadBalancer{}, &v1.Route{}, &v1.ProxyFleet{}, &v1.Tenant{}, &v1.TenantNodes{}).
		WithInterceptorFuncs(interceptor.Funcs{
			// Programmed conditions are written by world.apply (the apply and its watch event).
			SubResourceApply: func(context.Context, client.Client, string, runtime.ApplyConfiguration, ...client.SubResourceApplyOption) error {
				return nil
			},
			// The cache lists in no particular order (the fake client in name order).
			List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
				if err := c.List(ctx, list, opts...); err != nil {
					return err
				}
				if l, ok := list.(*v1.TenantList); ok {
					order.Shuffle(len(l.Items), func(i, j int) { l.Items[i], l.Items[j] = l.Items[j], l.Items[i] })
				}
				return nil
			},
		}).Build()
	w := &world{t: t, ctx: context.Background(), c: c, rng: rand.New(rand.NewPCG(seed, 7)), certs: certs, addresses: 20}
	if seed%2 == 1 {
		w.addresses = 250
	}
	w.create(&v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: v1.DefaultFleetName}, Spec: v1.ProxyFleetSpec{
		VIP: "127.0.60.1", Exposure: v1.ExposureNone, HTTP: &v1.FleetListener{Port: 8080}, HTTPS: &v1.FleetListener{Port: 8443}}})
	for i, group := range []string{"g", "g", ""} {
		name := fmt.Sprintf("t%d", i)
		w.tenants = append(w.tenants, name)
		w.create(&v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 1, UID: types.UID("uid-" + name)},
			Spec: v1.TenantSpec{AddressPool: "p", Group: group, Hostnames: []v1.Hostname{"*.example.com"}, NodeCIDRs: testNodeCIDRs}})
		w.create(&v1.TenantNodes{ObjectMeta: metav1.ObjectMeta{Namespace: tenant.Namespace(name), Name: v1.TenantNodesName, Generation: 1},
			Spec: v1.TenantNodesSpec{Cluster: "c-" + name, Nodes: []v1.TenantNode{{Name: "n1", Zone: "z1", Addresses: []v1.IPAddress{v1.IPAddress(fmt.Sprintf("127.0.%d.1", i+1))}}}}})
	}
	w.xds = &recorder{}
	w.b = newTestBuilder(c, w.xds)
	w.b.WriteStatus = nil // it writes status
	w.b.onWrites = w.apply
	return w
}

// apply writes Programmed conditions the builder decided, as the apiserver
// would, and delivers their watch events.
func (w *world) apply(writes []programmedWrite) {
	for _, wr := range writes {
		w.writes++
		var obj client.Object
		var conds *[]metav1.Condition
		switch wr.obj.(type) {
		case *v1.LoadBalancer:
			lb := &v1.LoadBalancer{}
			obj, conds = lb, &lb.Status.Conditions
		case *v1.Route:
			rt := &v1.Route{}
			obj, conds = rt, &rt.Status.Conditions
		}
		if err := w.c.Get(w.ctx, client.ObjectKeyFromObject(wr.obj), obj); err != nil {
			continue // deleted since
		}
		meta.SetStatusCondition(conds, wr.cond)
		must(w.t, w.c.Status().Update(w.ctx, obj))
		w.touched(obj)
	}
}

// checkStatus has the builder decide every object's Programmed condition
// the full way (reconcileFull) and fails when that would write anything, or
// would remember another xDS generation for an object: the incremental
// decisions, with their writes played, left nothing behind. What the
// builder keeps between reconciles is as it was before the check.
func (w *world) checkStatus(where string) {
	w.t.Helper()
	b, fleet := w.b, v1.DefaultFleetName
	st := b.stateOf(fleet)
	valid, dirty, parts := st.valid, maps.Clone(b.dirty), maps.Clone(b.parts)
	since := maps.Clone(b.since[fleet])
	// Neither what is served nor the translator's memory is touched.
	tr, xds := b.trans[fleet], b.XDS
	b.trans[fleet], b.XDS = &translate.Incremental{}, &frozenXDS{gen: b.gen[fleet], acked: xds.AckedGeneration(fleet)}
	var got []programmedWrite
	b.onWrites = func(ws []programmedWrite) { got = append(got, ws...) }
	b.fullOnly = true
	reconcileFleet(w.t, b)
	b.fullOnly, b.onWrites = false, w.apply
	b.dirty, b.parts, st.valid = dirty, parts, valid
	b.trans[fleet], b.XDS = tr, xds
	for _, wr := range got {
		w.t.Fatalf("%s: a full pass writes %s: %s %s %q (gen %d); the incremental pass left %+v (reconciles by path %+v)", where, servedKey(wr.obj),
			wr.cond.Status, wr.cond.Reason, wr.cond.Message, wr.cond.ObservedGeneration, meta.FindStatusCondition(conditionsOf(wr.obj), v1.ConditionProgrammed), w.b.paths)
	}
	if !maps.Equal(since, b.since[fleet]) {
		w.t.Fatalf("%s: objects served since: incremental %v, full %v", where, since, b.since[fleet])
	}
}

func newTestBuilder(c client.Client, xds XDS) *Builder {
	b := &Builder{Client: c, XDS: xds, Log: logr.Discard(), BackendDeny: testDeny, WriteStatus: func() bool { return false }}
	b.init()
	return b
}

func (w *world) create(o client.Object) {
	w.t.Helper()
	if err := w.c.Create(w.ctx, o); err != nil {
		w.t.Fatal(err)
	}
}

// touched is what a watch handler of the builder does for an event of o.
func (w *world) touched(o client.Object) { w.b.changedInNamespace(w.ctx, o) }

func pick[T any](rng *rand.Rand, items []T) *T {
	if len(items) == 0 {
		return nil
	}
	return &items[rng.IntN(len(items))]
}

// step makes one random change, as a tenant, admission or an admin would.
func (w *world) step() string {
	rng, ctx := w.rng, w.ctx
	tn := w.tenants[rng.IntN(len(w.tenants))]
	ns := tenant.Namespace(tn)
	var lbs v1.LoadBalancerList
	var rts v1.RouteList
	must(w.t, w.c.List(ctx, &lbs, client.InNamespace(ns)))
	must(w.t, w.c.List(ctx, &rts, client.InNamespace(ns)))
	w.n++
	switch rng.IntN(18) {
	case 0, 1: // a LoadBalancer is admitted (VIPs collide now and then: a conflict)
		lb := &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("lb%d", w.n), Generation: 1, UID: types.UID(fmt.Sprint("lb", w.n)),
			CreationTimestamp: metav1.Unix(int64(w.n), 0)},
			Spec: v1.LoadBalancerSpec{Source: v1.ServiceSource{Cluster: "c", Namespace: "default", Name: "s", UID: "u"},
				Ports: []v1.LoadBalancerPort{{Port: 80 + v1.PortNumber(rng.IntN(2)), Protocol: v1.ProtocolTCP, NodePort: 30000 + v1.PortNumber(rng.IntN(50))}}}}
		if rng.IntN(3) == 0 {
			lb.Spec.Global = &v1.GlobalOptions{Name: "shared", Strategy: v1.StrategyFailover, Priority: ptr.To(int32(rng.IntN(3)))}
		}
		w.create(lb)
		lb.Status.Addresses = []v1.Address{{IP: v1.IPAddress(fmt.Sprintf("127.0.50.%d", 1+rng.IntN(w.addresses))), IPMode: v1.IPModeProxy}}
		lb.Status.Conditions = []metav1.Condition{{Type: v1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: v1.ReasonAccepted, LastTransitionTime: metav1.Now()}}
		must(w.t, w.c.Status().Update(ctx, lb))
		w.touched(lb)
		return "create LoadBalancer"
	case 2: // a LoadBalancer's spec
		if lb := pick(rng, lbs.Items); lb != nil && len(lb.Spec.Ports) > 0 {
			lb.Generation++
			lb.Spec.Ports[0].NodePort = 30000 + v1.PortNumber(rng.IntN(50))
			lb.Spec.SessionAffinity = []v1.SessionAffinity{v1.SessionAffinityNone, v1.SessionAffinityClientIP}[rng.IntN(2)]
			must(w.t, w.c.Update(ctx, lb))
			w.touched(lb)
			return "update LoadBalancer"
		}
	case 3: // a status write that changes nothing the fleet serves (Programmed)
		if lb := pick(rng, lbs.Items); lb != nil {
			lb.Status.Conditions = append(lb.Status.Conditions, metav1.Condition{Type: v1.ConditionProgrammed, Status: metav1.ConditionTrue, Reason: v1.ReasonProgrammed, LastTransitionTime: metav1.Now()})
			must(w.t, w.c.Status().Update(ctx, lb))
			w.touched(lb)
			return "LoadBalancer status"
		}
	case 4: // admission withdraws or moves an address
		if lb := pick(rng, lbs.Items); lb != nil {
			if rng.IntN(2) == 0 {
				lb.Status.Conditions = []metav1.Condition{{Type: v1.ConditionAccepted, Status: metav1.ConditionFalse, Reason: "Refused", LastTransitionTime: metav1.Now()}}
			} else {
				lb.Status.Addresses[0].IP = v1.IPAddress(fmt.Sprintf("127.0.50.%d", 1+rng.IntN(w.addresses)))
			}
			must(w.t, w.c.Status().Update(ctx, lb))
			w.touched(lb)
			return "LoadBalancer admission"
		}
	case 5:
		if lb := pick(rng, lbs.Items); lb != nil {
			must(w.t, w.c.Delete(ctx, lb))
			w.touched(lb)
			return "delete LoadBalancer"
		}
	case 6, 7: // a Route is admitted (hostnames collide now and then)
		host := v1.Hostname(fmt.Sprintf("h%d.example.com", rng.IntN(8)))
		rt := &v1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("rt%d", w.n), Generation: 1, UID: types.UID(fmt.Sprint("rt", w.n)),
			CreationTimestamp: metav1.Unix(int64(w.n), 0)}, Spec: v1.RouteSpec{
			Source:    v1.RouteSource{Kind: v1.SourceIngress, Cluster: "c", Namespace: "default", Name: "r", UID: "u"},
			Hostnames: []v1.Hostname{host},
			Rules: []v1.RouteRule{{Matches: []v1.RouteMatch{pathMatch(v1.PathPrefix, fmt.Sprintf("/p%d", rng.IntN(3)))},
				Backends: []v1.RouteBackend{{ServiceName: "web", NodePort: 30000 + v1.PortNumber(rng.IntN(50))}}}},
		}}
		if rng.IntN(2) == 0 {
			rt.Spec.TLS = []v1.RouteTLS{{Hostnames: []v1.Hostname{host}, SecretName: fmt.Sprintf("cert%d", rng.IntN(3))}}
		}
		w.create(rt)
		must(w.t, w.c.Status().Update(ctx, accepted(rt, host)))
		w.touched(rt)
		return "create Route"
	case 8: // a Route's rules
		if rt := pick(rng, rts.Items); rt != nil {
			rt.Generation++
			rt.Spec.Rules[0].Matches = []v1.RouteMatch{pathMatch(v1.PathPrefix, fmt.Sprintf("/p%d", rng.IntN(3)))}
			rt.Spec.Rules[0].Backends[0].NodePort = 30000 + v1.PortNumber(rng.IntN(50))
			must(w.t, w.c.Update(ctx, rt))
			w.touched(rt)
			return "update Route"
		}
	case 9:
		if rt := pick(rng, rts.Items); rt != nil {
			must(w.t, w.c.Delete(ctx, rt))
			w.touched(rt)
			return "delete Route"
		}
	case 10: // a TLS Secret comes, changes or goes
		name := fmt.Sprintf("cert%d", rng.IntN(3))
		var s corev1.Secret
		err := w.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &s)
		switch {
		case err != nil:
			src := w.certs[rng.IntN(len(w.certs))]
			s = corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Type: src.Type, Data: src.Data}
			w.create(&s)
		case rng.IntN(2) == 0:
			s.Data = w.certs[rng.IntN(len(w.certs))].Data
			must(w.t, w.c.Update(ctx, &s))
		default:
			must(w.t, w.c.Delete(ctx, &s))
		}
		w.touched(&s)
		return "Secret"
	case 11: // the tenant's nodes
		var nodes v1.TenantNodes
		must(w.t, w.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: v1.TenantNodesName}, &nodes))
		nodes.Generation++
		nodes.Spec.Nodes = append(nodes.Spec.Nodes, v1.TenantNode{Name: fmt.Sprint("n", w.n), Zone: fmt.Sprint("z", rng.IntN(2)),
			Addresses: []v1.IPAddress{v1.IPAddress(fmt.Sprintf("127.0.%d.%d", 10+rng.IntN(5), 1+rng.IntN(200)))}})
		must(w.t, w.c.Update(ctx, &nodes))
		return "TenantNodes" // watched without counting: its generation is in the key
	case 12: // the tenant's spec (limits, group)
		var t v1.Tenant
		must(w.t, w.c.Get(ctx, client.ObjectKey{Name: tn}, &t))
		t.Generation++
		if rng.IntN(2) == 0 {
			t.Spec.Limits.MaxNodes = ptr.To(int32(1 + rng.IntN(3)))
		} else {
			t.Spec.Group = []string{"g", "", "h"}[rng.IntN(3)]
		}
		must(w.t, w.c.Update(ctx, &t))
		return "Tenant"
	case 13: // the fleet's listeners
		var pf v1.ProxyFleet
		must(w.t, w.c.Get(ctx, client.ObjectKey{Name: v1.DefaultFleetName}, &pf))
		switch rng.IntN(3) {
		case 0:
			pf.Spec.HTTPS = nil
		case 1:
			pf.Spec.HTTPS = &v1.FleetListener{Port: 8443}
		default:
			pf.Spec.HTTP.Port = 8080 + v1.PortNumber(rng.IntN(2))
		}
		must(w.t, w.c.Update(ctx, &pf))
		return "ProxyFleet"
	case 14: // a Gateway is admitted, or its listeners change
		name := fmt.Sprintf("gw%d", rng.IntN(2))
		listeners := []v1.GatewayListener{
			{Name: "http", Port: 80, Protocol: v1.ListenerHTTP},
			{Name: "https", Port: 443, Protocol: v1.ListenerHTTPS, Hostname: "*.example.com", CertificateSecrets: []string{fmt.Sprintf("cert%d", rng.IntN(3))}},
			{Name: "tls", Port: 8443, Protocol: v1.ListenerTLS},
		}[:1+rng.IntN(3)]
		var lb v1.LoadBalancer
		if err := w.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &lb); err == nil {
			lb.Generation++
			lb.Spec.Listeners = listeners
			must(w.t, w.c.Update(ctx, &lb))
			w.touched(&lb)
			return "update Gateway"
		}
		lb = v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 1, UID: types.UID(fmt.Sprint("gw", w.n)),
			CreationTimestamp: metav1.Unix(int64(w.n), 0)},
			Spec: v1.LoadBalancerSpec{Source: v1.ServiceSource{Kind: v1.SourceGateway, Cluster: "c", Namespace: "default", Name: name, UID: "u"}, Listeners: listeners}}
		w.create(&lb)
		// Now and then on an address another LoadBalancer of the fleet uses: a conflict.
		lb.Status.Addresses = []v1.Address{{IP: v1.IPAddress(fmt.Sprintf("127.0.%d.%d", []int{62, 50}[rng.IntN(2)], 1+rng.IntN(w.addresses))), IPMode: v1.IPModeProxy}}
		lb.Status.Conditions = []metav1.Condition{{Type: v1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: v1.ReasonAccepted, LastTransitionTime: metav1.Now()}}
		must(w.t, w.c.Status().Update(ctx, &lb))
		w.touched(&lb)
		return "create Gateway"
	case 15: // a Route on a Gateway's listeners is admitted
		parent := v1.RouteParent{LoadBalancer: fmt.Sprintf("gw%d", rng.IntN(2)), Listeners: [][]string{{"http"}, {"https"}, {"http", "https"}}[rng.IntN(3)]}
		kind := v1.SourceHTTPRoute
		if rng.IntN(4) == 0 {
			kind, parent.Listeners = v1.SourceTLSRoute, []string{"tls"}
		}
		var hosts []v1.Hostname
		if rng.IntN(2) == 0 {
			hosts = []v1.Hostname{v1.Hostname(fmt.Sprintf("g%d.example.com", rng.IntN(4)))}
		}
		rt := &v1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("gr%d", w.n), Generation: 1, UID: types.UID(fmt.Sprint("gr", w.n)),
			CreationTimestamp: metav1.Unix(int64(w.n), 0)}, Spec: v1.RouteSpec{
			Source:    v1.RouteSource{Kind: kind, Cluster: "c", Namespace: "default", Name: "r", UID: "u"},
			Hostnames: hosts, Parents: []v1.RouteParent{parent},
			Rules: []v1.RouteRule{{Backends: []v1.RouteBackend{{ServiceName: "web", NodePort: 30000 + v1.PortNumber(rng.IntN(50))}}}},
		}}
		if kind == v1.SourceHTTPRoute && rng.IntN(2) == 0 {
			rt.Spec.Rules[0].Matches = []v1.RouteMatch{pathMatch(v1.PathPrefix, fmt.Sprintf("/p%d", rng.IntN(3)))}
		}
		w.create(rt)
		must(w.t, w.c.Status().Update(ctx, accepted(rt)))
		w.touched(rt)
		return "create Gateway Route"
	case 17: // another writer (an old leader) sets a LoadBalancer's or Route's Programmed condition
		cond := metav1.Condition{Type: v1.ConditionProgrammed, Status: metav1.ConditionFalse, Reason: "Stale", Message: "written elsewhere", ObservedGeneration: 1}
		if rng.IntN(2) == 0 {
			if lb := pick(rng, lbs.Items); lb != nil {
				meta.SetStatusCondition(&lb.Status.Conditions, cond)
				must(w.t, w.c.Status().Update(ctx, lb))
				w.touched(lb)
				return "Programmed written elsewhere"
			}
		} else if rt := pick(rng, rts.Items); rt != nil {
			meta.SetStatusCondition(&rt.Status.Conditions, cond)
			must(w.t, w.c.Status().Update(ctx, rt))
			w.touched(rt)
			return "Programmed written elsewhere"
		}
	case 16: // a Gateway Route's backend or parents
		for _, rt := range rts.Items {
			if len(rt.Spec.Parents) == 0 {
				continue
			}
			rt.Generation++
			rt.Spec.Rules[0].Backends[0].NodePort = 30000 + v1.PortNumber(rng.IntN(50))
			if rng.IntN(2) == 0 && rt.Spec.Source.Kind == v1.SourceHTTPRoute {
				rt.Spec.Parents[0].LoadBalancer = fmt.Sprintf("gw%d", rng.IntN(2))
			}
			must(w.t, w.c.Update(ctx, &rt))
			w.touched(&rt)
			return "update Gateway Route"
		}
	}
	return "nothing"
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func reconcileFleet(t *testing.T, b *Builder) {
	t.Helper()
	if _, err := b.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Name: v1.DefaultFleetName}}); err != nil {
		t.Fatal(err)
	}
}

// TestIncrementalSnapshotMatchesFullBuild applies random sequences of
// changes (objects created, changed, deleted and re-admitted, Secrets, nodes,
// tenants, the fleet's listeners; conflicts included) and after each compares
// what the incremental builder serves with what a builder that starts from
// nothing builds: the same resources and the same versions.
func TestIncrementalSnapshotMatchesFullBuild(t *testing.T) {
	var certs []*corev1.Secret
	for i := range 2 {
		certs = append(certs, tlsSecret(t, "x", "x", fmt.Sprintf("h%d.example.com", i), "*.example.com"))
	}
	for seed := range uint64(6) {
		w := newWorld(t, seed, certs)
		if seed == 5 {
			// Bursts of more than a few changed parts make the state again.
			defer func(n int) { maxChangedParts = n }(maxChangedParts)
			maxChangedParts = 2
		}
		counts := map[string]int{}
		for step := range 120 {
			// Now and then a few changes before the builder reconciles (a burst).
			var what string
			for range 1 + w.rng.IntN(2)*w.rng.IntN(4) {
				what = w.step()
				counts[what]++
			}
			reconcileFleet(t, w.b)
			where := fmt.Sprintf("seed %d step %d (%s)", seed, step, what)
			full := &recorder{}
			ref := newTestBuilder(w.c, full)
			ref.fullOnly = true
			reconcileFleet(t, ref)
			sameSnapshot(t, where, w.xds.res, full.res)
			w.checkStatus(where)
			if w.rng.IntN(3) == 0 {
				// The proxies acknowledge: only conditions change.
				w.xds.ack(v1.DefaultFleetName)
				reconcileFleet(t, w.b)
				sameSnapshot(t, where+" ACK", w.xds.res, full.res)
				w.checkStatus(where + " ACK")
				counts["(acknowledged)"]++
			}
			if w.b.paths.diverged > 0 {
				t.Fatalf("%s: the incremental model did not translate, the full one did", where)
			}
			for _, l := range full.res[resource.ListenerType] {
				if strings.HasPrefix(cachev3.GetResourceName(l), "gateway/") {
					counts["(served a Gateway listener)"]++
					break
				}
			}
		}
		t.Logf("seed %d: %v; reconciles by path %+v; %d conditions written", seed, counts, w.b.paths, w.writes)
		if seed%2 == 1 && w.b.paths.changes < 60 {
			t.Fatalf("seed %d: %d reconciles took the incremental path: the sequence does not test it", seed, w.b.paths.changes)
		}
		if counts["(served a Gateway listener)"] == 0 {
			t.Fatalf("seed %d: no step served a Gateway: the sequence does not test them", seed)
		}
	}
}

// Events of many objects of a namespace, or of a Secret, have the namespace
// read in full; a few LoadBalancers and Routes are read one by one.
func TestChangedObjectsOfANamespace(t *testing.T) {
	b := newTestBuilder(nil, &recorder{})
	ns := tenant.Namespace("t")
	b.namespaceChanged(&v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "a"}})
	b.namespaceChanged(&v1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "r"}})
	if d := b.dirty[ns]; d.all || !d.lbs["a"] || !d.routes["r"] {
		t.Fatalf("two objects: %+v", d)
	}
	b.namespaceChanged(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "s"}})
	b.namespaceChanged(&v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "b"}})
	if d := b.dirty[ns]; !d.all {
		t.Fatalf("after a Secret: %+v", d)
	}
	other := tenant.Namespace("u")
	for i := range maxChangedObjects + 5 {
		b.namespaceChanged(&v1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: other, Name: fmt.Sprint("r", i)}})
	}
	if d := b.dirty[other]; !d.all {
		t.Fatalf("after %d objects: not read in full", maxChangedObjects+5)
	}
	if b.seq[ns] != 4 || b.seq[other] != maxChangedObjects+5 {
		t.Fatalf("events counted: %d, %d", b.seq[ns], b.seq[other])
	}
}

func sameSnapshot(t *testing.T, where string, got, want map[resource.Type][]cachetypes.Resource) {
	t.Helper()
	for _, typ := range []resource.Type{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType, resource.SecretType} {
		g, w := got[typ], want[typ]
		names := func(rs []cachetypes.Resource) []string {
			var out []string
			for _, r := range rs {
				out = append(out, cachev3.GetResourceName(r))
			}
			return out
		}
		if !slices.Equal(names(g), names(w)) {
			t.Fatalf("%s: %s %v, a full build has %v", where, typ, names(g), names(w))
		}
		for i := range g {
			if !proto.Equal(g[i], w[i]) {
				t.Fatalf("%s: %s %q differs from a full build", where, typ, cachev3.GetResourceName(w[i]))
			}
		}
		vg, err := server.Hash(g)
		must(t, err)
		vw, err := server.Hash(w)
		must(t, err)
		if vg != vw {
			t.Fatalf("%s: %s version %s, a full build's %s", where, typ, vg, vw)
		}
	}
}

func reconcileRequest() ctrl.Request {
	return ctrl.Request{NamespacedName: types.NamespacedName{Name: v1.DefaultFleetName}}
}

// frozenXDS serves nothing: Set keeps the generation as it is.
type frozenXDS struct{ gen, acked uint64 }

func (x *frozenXDS) Set(string, map[resource.Type][]cachetypes.Resource) uint64 { return x.gen }
func (x *frozenXDS) OnAcked(func(string, uint64))                               {}
func (x *frozenXDS) AckedGeneration(string) uint64                              { return x.acked }
