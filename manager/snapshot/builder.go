// Package snapshot builds each fleet's traffic model from the admitted API
// objects, translates it, and hands it to the xDS server. It marks an object
// Programmed only after every connected proxy of its fleet acknowledged a
// configuration that contains the object's current generation.
//
// Admitted LoadBalancers become L4 services. Admitted Routes (their accepted
// hostnames) become virtual hosts on the fleet's shared HTTP/HTTPS listeners,
// on the ProxyFleet's VIP: one virtual host per hostname, merged across the
// Routes of one tenant group (oldest Route first on equal precedence), with
// the certificate of a usable TLS Secret (served by SDS, chosen by SNI); a
// hostname whose Secret is missing or unusable is served over plain HTTP only.
// Route backends are the tenant's nodes × node port, one Envoy cluster per
// tenant Service node port.
package snapshot

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"

	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/envoy/server"
	"github.com/fleetlb/fleetlb/envoy/translate"
	"github.com/fleetlb/fleetlb/internal/model"
	"github.com/fleetlb/fleetlb/manager/backends"
	"github.com/fleetlb/fleetlb/manager/route"
	"github.com/fleetlb/fleetlb/manager/tenant"
	"github.com/fleetlb/fleetlb/manager/xdsreport"
)

// XDS is the part of envoy/server the builder uses.
type XDS interface {
	Set(fleet string, resources map[resource.Type][]cachetypes.Resource) uint64
	OnAcked(func(fleet string, generation uint64))
	AckedGeneration(fleet string) uint64
}

// ReplicaAcks is the acknowledged generation of a fleet across replicas,
// given what this replica's proxies acknowledged (own).
type ReplicaAcks interface {
	Acked(ctx context.Context, fleet string, own uint64) (uint64, error)
}

// Builder reconciles one fleet at a time (the request name is the fleet).
type Builder struct {
	Client client.Client
	XDS    XDS
	Log    logr.Logger
	// WriteStatus reports whether this replica writes Programmed conditions.
	// Every replica builds and serves snapshots (they are a pure function of
	// API state); only the leader writes status. Nil means always.
	WriteStatus func() bool
	// Replicas, when set, adds what the proxies connected to the other
	// manager replicas acknowledged: Programmed waits for every proxy of the
	// fleet, whichever replica it is connected to.
	Replicas ReplicaAcks
	// BackendDeny is the static deny-list for node addresses (nil means
	// backends.DefaultDeny); address pools and fleet addresses are always added.
	BackendDeny []netip.Prefix
	// Recorder, when set, tells a tenant which of its nodes its limits leave
	// unserved (a Warning event on its TenantNodes).
	Recorder events.EventRecorder

	mu    sync.Mutex
	last  map[string]*model.Fleet               // fleet → model last handed to the server
	gen   map[string]uint64                     // fleet → its generation
	since map[string]map[string]programmedSince // fleet → "Kind/ns/name" → generation that first served its current spec
	acks  chan event.GenericEvent
	// contain is, per fleet, what is held back because its proxies refused a configuration.
	contain map[string]*containment

	nodeLimits sync.Map // tenant namespace → the node-limit refusal last told
}

type programmedSince struct {
	objectGeneration int64
	xdsGeneration    uint64
}

// SetupWithManager registers the builder.
func (b *Builder) SetupWithManager(mgr ctrl.Manager) error {
	b.last, b.gen, b.since = map[string]*model.Fleet{}, map[string]uint64{}, map[string]map[string]programmedSince{}
	b.contain = map[string]*containment{}
	b.acks = make(chan event.GenericEvent, 256)
	if n, ok := b.XDS.(NACKSource); ok {
		n.OnNACK(func(fleet string, nack server.NACK) {
			_, served := n.Version(fleet)
			b.mu.Lock()
			c := b.containmentOf(fleet)
			c.nacks = append(c.nacks, nackEvent{detail: nack.Detail, servedGen: served})
			b.mu.Unlock()
			select {
			case b.acks <- event.GenericEvent{Object: &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: fleet}}}:
			default:
			}
		})
	}
	b.XDS.OnAcked(func(fleet string, _ uint64) {
		select {
		case b.acks <- event.GenericEvent{Object: &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: fleet}}}:
		default: // a reconcile of this fleet is already queued behind a full buffer
		}
	})
	bld := ctrl.NewControllerManagedBy(mgr)
	if b.Replicas != nil {
		// Another replica's report changed: its proxies may have caught up.
		bld = bld.Watches(&coordinationv1.Lease{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			var out []reconcile.Request
			for _, f := range xdsreport.Fleets(o.(*coordinationv1.Lease)) {
				out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Name: f}})
			}
			return out
		}), builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetLabels()[xdsreport.Label] != "" })))
	}
	return bld.
		Named("snapshot").
		WithOptions(controller.Options{NeedLeaderElection: ptr.To(false)}).
		Watches(&v1.LoadBalancer{}, handler.EnqueueRequestsFromMapFunc(b.fleetOfNamespace)).
		Watches(&v1.TenantNodes{}, handler.EnqueueRequestsFromMapFunc(b.fleetOfNamespace)).
		Watches(&v1.Route{}, handler.EnqueueRequestsFromMapFunc(b.fleetOfNamespace)).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(b.fleetOfNamespace)).
		Watches(&v1.ProxyFleet{}, &handler.EnqueueRequestForObject{}, builder.WithPredicates(route.AddressesChanged)).
		Watches(&v1.Tenant{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: fleetName(o.(*v1.Tenant))}}}
		})).
		// Pools are in every fleet's backend deny-list.
		Watches(&v1.AddressPool{}, handler.EnqueueRequestsFromMapFunc(b.allFleets)).
		WatchesRawSource(source.Channel(b.acks, &handler.EnqueueRequestForObject{})).
		Complete(b)
}

func (b *Builder) allFleets(ctx context.Context, _ client.Object) []reconcile.Request {
	var fleets v1.ProxyFleetList
	if err := b.Client.List(ctx, &fleets); err != nil {
		return nil
	}
	var out []reconcile.Request
	for _, f := range fleets.Items {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Name: f.Name}})
	}
	return out
}

func fleetName(t *v1.Tenant) string { return cmp.Or(t.Spec.Fleet, v1.DefaultFleetName) }

func (b *Builder) fleetOfNamespace(ctx context.Context, o client.Object) []reconcile.Request {
	name, ok := strings.CutPrefix(o.GetNamespace(), tenant.NamespacePrefix)
	if !ok {
		return nil
	}
	var t v1.Tenant
	if err := b.Client.Get(ctx, types.NamespacedName{Name: name}, &t); err != nil {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: fleetName(&t)}}}
}

// admittedLB is one LoadBalancer and the model parts made from it.
type admittedLB struct {
	lb       *v1.LoadBalancer
	global   string // globalKey: LoadBalancers with the same one share a VIP and backends
	services []model.L4Service
	backends []model.Backend
	gateway  *gatewayParts // a Gateway's listeners (gateways.go)
}

// served is an object the Programmed condition is reported on.
type served struct {
	obj client.Object
	gen int64
	// reason and msg say why the object is not served ("" when it is).
	reason, msg string
}

func servedKey(o client.Object) string {
	kind := "LoadBalancer"
	if _, ok := o.(*v1.Route); ok {
		kind = "Route"
	}
	return kind + "/" + o.GetNamespace() + "/" + o.GetName()
}

// Reconcile implements reconcile.Reconciler.
func (b *Builder) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	fleet := req.Name
	var tenants v1.TenantList
	if err := b.Client.List(ctx, &tenants); err != nil {
		return ctrl.Result{}, err
	}
	var pf *v1.ProxyFleet
	if p := (&v1.ProxyFleet{}); b.Client.Get(ctx, types.NamespacedName{Name: fleet}, p) == nil {
		pf = p
	}
	httpL, httpsL, noL7 := sharedListeners(pf)
	deny, err := backends.Load(ctx, b.Client, b.BackendDeny)
	if err != nil {
		return ctrl.Result{}, err
	}

	var lbs []admittedLB
	var lbErrs []error
	var routes []*admittedRoute
	var objects []served // Programmed is reported on these
	var unserved []*v1.Route
	for i := range tenants.Items {
		t := &tenants.Items[i]
		if fleetName(t) != fleet || !t.DeletionTimestamp.IsZero() {
			continue
		}
		ns := tenant.Namespace(t.Name)
		nodes := &v1.TenantNodes{}
		_ = b.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: v1.TenantNodesName}, nodes) // none yet: no endpoints
		// Only node addresses the tenant may use; manager/nodes reports the rest.
		nodes, _ = backends.Confine(t, nodes, deny)
		nodes, refused := NodesWithinLimits(t, nodes)
		b.tellNodeLimit(nodes, refused)
		secretOf := func(name string) *corev1.Secret {
			var s corev1.Secret
			if b.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &s) != nil {
				return nil
			}
			return &s
		}
		var lbList v1.LoadBalancerList
		if err := b.Client.List(ctx, &lbList, client.InNamespace(ns)); err != nil {
			return ctrl.Result{}, err
		}
		for j := range lbList.Items {
			lb := &lbList.Items[j]
			if !lb.DeletionTimestamp.IsZero() || !meta.IsStatusConditionTrue(lb.Status.Conditions, v1.ConditionAccepted) || len(lb.Status.Addresses) == 0 {
				continue
			}
			a, err := fromLoadBalancer(t.Name, lb, nodes)
			if isGateway(lb) {
				a, err = fromGateway(t.Name, lb, secretOf)
			}
			a.global = globalKey(t, lb)
			lbs, lbErrs = append(lbs, a), append(lbErrs, err)
		}
		var rtList v1.RouteList
		if err := b.Client.List(ctx, &rtList, client.InNamespace(ns)); err != nil {
			return ctrl.Result{}, err
		}
		for j := range rtList.Items {
			rt := &rtList.Items[j]
			if !routeServed(rt) {
				unserved = append(unserved, rt)
				continue
			}
			a := fromRoute(t, rt, nodes, secretOf)
			if route.OnGateways(rt) {
				a = fromGatewayRoute(t, rt, nodes)
			}
			routes = append(routes, &a)
		}
	}

	// Each Route must translate on its own, so one bad Route never stalls the fleet.
	slices.SortFunc(routes, func(x, y *admittedRoute) int { return route.Older(x.rt, y.rt) })
	var okRoutes []*admittedRoute
	for _, a := range routes {
		o := served{obj: a.rt, gen: a.rt.Generation}
		mini := &model.Fleet{Name: fleet, HTTP: httpL, HTTPS: httpsL, Certificates: a.certs, Backends: a.backends}
		switch {
		case a.gateway != nil:
			if o.reason, o.msg = checkGatewayRoute(fleet, a, lbs); o.reason == "" {
				okRoutes = append(okRoutes, a)
			}
		case noL7 != "":
			o.reason, o.msg = v1.ReasonPending, noL7
		case len(a.hosts) == 0:
			o.reason, o.msg = v1.ReasonInvalidSpec, "no rule of the route can be served"
		default:
			mini.VirtualHosts, _ = virtualHosts([]*admittedRoute{a}, httpL, httpsL)
			if len(mini.VirtualHosts) == 0 {
				o.reason, o.msg = v1.ReasonInvalidSpec, "no hostname of the route can be served on the fleet's listeners"
			} else if _, err := translate.Translate(mini); err != nil {
				o.reason, o.msg = v1.ReasonInvalidSpec, err.Error()
			} else {
				okRoutes = append(okRoutes, a)
			}
		}
		objects = append(objects, o)
	}
	// Each LoadBalancer must translate on its own (next to the shared
	// listeners), so one bad object never stalls the fleet.
	shared := &model.Fleet{Name: fleet}
	if len(okRoutes) > 0 {
		shared.HTTP, shared.HTTPS = httpL, httpsL
	}
	var okLBs []admittedLB
	for i, a := range lbs {
		o := served{obj: a.lb, gen: a.lb.Generation}
		err := lbErrs[i]
		if err == nil {
			_, err = translate.Translate(withGateway(&model.Fleet{Name: fleet, L4: a.services, Backends: a.backends, HTTP: shared.HTTP, HTTPS: shared.HTTPS}, a))
		}
		if err != nil {
			o.reason, o.msg = v1.ReasonInvalidSpec, err.Error()
		} else {
			okLBs = append(okLBs, a)
		}
		objects = append(objects, o)
	}

	// What the fleet's proxies refused stays out, with its tenant.
	okRoutes, okLBs = b.holdBack(fleet, okRoutes, okLBs, objects)

	// Objects were checked one by one; what is left is a conflict between
	// them. The younger object of a conflict is left out, never the fleet.
	f, err := assemble(fleet, httpL, httpsL, okRoutes, okLBs)
	if err != nil {
		var excluded []client.Object
		f, excluded = resolveConflicts(fleet, httpL, httpsL, okRoutes, okLBs)
		for _, obj := range excluded {
			for i := range objects {
				if objects[i].obj == obj {
					objects[i].reason, objects[i].msg = ReasonConflicted, conflictMessage(obj, fleet)
				}
			}
		}
		b.Log.Info("fleet-level conflict: younger objects left out", "fleet", fleet, "excluded", len(excluded), "error", err.Error())
	}

	b.mu.Lock()
	gen, same := b.gen[fleet], reflect.DeepEqual(b.last[fleet], f)
	b.mu.Unlock()
	if !same {
		out, err := translate.Translate(f)
		if err != nil {
			// resolveConflicts made f translate; this is a translator bug.
			return ctrl.Result{}, fmt.Errorf("fleet %s: %w", fleet, err)
		}
		gen = b.XDS.Set(fleet, out.ByType())
		b.mu.Lock()
		b.last[fleet], b.gen[fleet] = f, gen
		b.mu.Unlock()
	}

	acked := b.XDS.AckedGeneration(fleet)
	if b.Replicas != nil {
		var err error
		if acked, err = b.Replicas.Acked(ctx, fleet, acked); err != nil {
			return ctrl.Result{}, err
		}
	}
	b.mu.Lock()
	prev, next := b.since[fleet], map[string]programmedSince{}
	for _, o := range objects {
		if o.reason != "" {
			continue
		}
		key := servedKey(o.obj)
		s, ok := prev[key]
		if !ok || s.objectGeneration != o.gen {
			s = programmedSince{objectGeneration: o.gen, xdsGeneration: gen}
		}
		next[key] = s
	}
	b.since[fleet] = next // objects no longer served are forgotten
	if c := b.contain[fleet]; c != nil && c.trial != "" && c.trialGen == 0 {
		c.trialGen = gen
	}
	b.mu.Unlock()
	for _, o := range objects {
		cond := metav1.Condition{Type: v1.ConditionProgrammed, Status: metav1.ConditionFalse, Reason: o.reason, Message: o.msg, ObservedGeneration: o.gen}
		if o.reason == "" {
			cond.Reason, cond.Message = v1.ReasonPending, "waiting for every proxy of fleet "+fleet+" to acknowledge the configuration"
			if acked >= next[servedKey(o.obj)].xdsGeneration {
				cond.Status, cond.Reason, cond.Message = metav1.ConditionTrue, v1.ReasonProgrammed, "served by fleet "+fleet
			}
		}
		if err := b.setProgrammed(ctx, o.obj, cond); err != nil {
			return ctrl.Result{}, err
		}
	}
	// A Route no longer accepted is no longer programmed either.
	for _, rt := range unserved {
		if meta.FindStatusCondition(rt.Status.Conditions, v1.ConditionProgrammed) == nil {
			continue
		}
		cond := metav1.Condition{Type: v1.ConditionProgrammed, Status: metav1.ConditionFalse, Reason: v1.ReasonPending,
			Message: "no hostname of the route is accepted", ObservedGeneration: rt.Generation}
		if err := b.setProgrammed(ctx, rt, cond); err != nil {
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{}, nil
}

func (b *Builder) setProgrammed(ctx context.Context, obj client.Object, c metav1.Condition) error {
	if b.WriteStatus != nil && !b.WriteStatus() {
		return nil
	}
	switch o := obj.(type) {
	case *v1.LoadBalancer:
		status := o.Status.DeepCopy()
		meta.SetStatusCondition(&status.Conditions, c)
		if equality.Semantic.DeepEqual(&o.Status, status) {
			return nil
		}
		patch := client.MergeFrom(o.DeepCopy())
		o.Status = *status
		return client.IgnoreNotFound(b.Client.Status().Patch(ctx, o, patch))
	case *v1.Route:
		status := o.Status.DeepCopy()
		meta.SetStatusCondition(&status.Conditions, c)
		if equality.Semantic.DeepEqual(&o.Status, status) {
			return nil
		}
		// Admission writes the other conditions of a Route: never overwrite them with a stale list.
		patch := client.MergeFromWithOptions(o.DeepCopy(), client.MergeFromWithOptimisticLock{})
		o.Status = *status
		return client.IgnoreNotFound(b.Client.Status().Patch(ctx, o, patch))
	}
	return fmt.Errorf("programmed: unexpected %T", obj)
}

// BackendName is the stable, readable Envoy cluster name of one LoadBalancer
// port. It comes from the management object's identity (its tenant namespace
// and name, unique in the fleet), never from what the tenant wrote in its
// spec: two LoadBalancers with the same spec.source cannot collide.
func BackendName(tenantName, lbName string, p v1.LoadBalancerPort) string {
	return fmt.Sprintf("%s/%s/%s/%d", tenantName, lbName, strings.ToLower(string(p.Protocol)), p.Port)
}

// fromLoadBalancer maps an admitted LoadBalancer onto model services and backends.
func fromLoadBalancer(tenantName string, lb *v1.LoadBalancer, nodes *v1.TenantNodes) (admittedLB, error) {
	a := admittedLB{lb: lb}
	vip, err := netip.ParseAddr(string(lb.Status.Addresses[0].IP))
	if err != nil {
		return a, fmt.Errorf("address %q: %w", lb.Status.Addresses[0].IP, err)
	}
	var ranges []netip.Prefix
	for _, r := range lb.Spec.SourceRanges {
		p, err := netip.ParsePrefix(string(r))
		if err != nil {
			return a, fmt.Errorf("sourceRanges: %w", err)
		}
		ranges = append(ranges, p)
	}
	cluster := cmp.Or(nodes.Spec.Cluster, lb.Spec.Source.Cluster)
	for _, p := range lb.Spec.Ports {
		name := BackendName(tenantName, lb.Name, p)
		proto, bproto := model.TCP, model.BackendTCP
		if p.Protocol == v1.ProtocolUDP {
			proto, bproto = model.UDP, model.BackendUDP
		}
		be := model.Backend{Name: name, Protocol: bproto, SessionAffinity: lb.Spec.SessionAffinity == v1.SessionAffinityClientIP,
			Groups: endpointGroups(cluster, nodes, uint16(p.NodePort))}
		switch lb.Spec.ProxyProtocol {
		case v1.ProxyProtocolV1:
			be.ProxyProtocol = 1
		case v1.ProxyProtocolV2:
			be.ProxyProtocol = 2
		}
		if proto == model.TCP {
			hc := &model.HealthCheck{Type: model.HealthTCP}
			if h := lb.Spec.HealthCheck; h != nil {
				if h.Type == v1.HealthCheckHTTP {
					hc.Type, hc.Path = model.HealthHTTP, h.Path
				}
				if h.NodePort != nil {
					hc.Port = uint16(*h.NodePort)
				}
				for _, s := range h.ExpectedStatuses {
					hc.ExpectedStatuses = append(hc.ExpectedStatuses, int(s))
				}
				if h.Interval != nil {
					hc.Interval = model.Duration(h.Interval.Duration)
				}
				if h.Timeout != nil {
					hc.Timeout = model.Duration(h.Timeout.Duration)
				}
				if h.UnhealthyThreshold != nil {
					hc.UnhealthyThreshold = uint32(*h.UnhealthyThreshold)
				}
				if h.HealthyThreshold != nil {
					hc.HealthyThreshold = uint32(*h.HealthyThreshold)
				}
			}
			be.HealthCheck = hc
		}
		a.backends = append(a.backends, be)
		a.services = append(a.services, model.L4Service{
			Ref: model.Ref{Tenant: tenantName, Namespace: lb.Namespace, Name: lb.Name},
			VIP: vip, Port: uint16(p.Port), Protocol: proto, Backend: name, SourceRanges: ranges,
		})
	}
	return a, nil
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
