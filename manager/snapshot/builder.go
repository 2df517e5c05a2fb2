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
	"slices"
	"strings"
	"sync"
	"time"

	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
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
	// StatusWorkers bounds the Programmed conditions written at once (0: DefaultStatusWorkers).
	StatusWorkers int
	// ReconcileInterval paces a fleet's reconciles during a burst of events
	// (pace.go; 0: DefaultReconcileInterval, negative: not paced).
	ReconcileInterval time.Duration
	pace              *pacer       // nil: not paced (the tests that call Reconcile)
	status            statusWriter // writes Programmed conditions off the reconcile (status.go)
	// fullOnly: every reconcile takes the full path (the reference of the
	// tests that the incremental path must equal).
	fullOnly bool
	// Reconciles by path; diverged counts those where the incremental model
	// did not translate but the full one did (a bug of the incremental path).
	paths    struct{ changes, rebuilt, full, diverged int }
	onWrites func([]programmedWrite) // tests: takes the Programmed conditions decided, in place of the status writer

	mu    sync.Mutex
	trans map[string]*translate.Incremental     // fleet → its translator, holding the resources last handed to the server
	last  map[string]*model.Fleet               // fleet → model last handed to the server
	gen   map[string]uint64                     // fleet → its generation
	since map[string]map[string]programmedSince // fleet → "Kind/ns/name" → generation that first served its current spec
	acks  chan event.GenericEvent
	// contain is, per fleet, what is held back because its proxies refused a configuration.
	contain map[string]*containment

	nodeLimits sync.Map // tenant namespace → the node-limit refusal last told

	fleetOf map[string]string // tenant name → its fleet, kept by the Tenant watch

	// Incremental building (cache.go).
	seq      map[string]uint64          // tenant namespace → events seen by the watch handlers
	dirty    map[string]*changedObjects // tenant namespace → what those events were about, since it was last read
	parts    map[string]*tenantParts    // tenant namespace → what its objects made
	deny     map[string]*denyEntry      // fleet → its deny-list and version
	asm      map[string]*assembleMemo   // fleet → what its Routes and LoadBalancers made last
	states   map[string]*fleetState     // fleet → what its objects assembled into (fleetstate.go)
	denySeq  uint64
	partsSeq uint64 // numbers the tenantParts made
}

type programmedSince struct {
	objectGeneration int64
	xdsGeneration    uint64
}

func (b *Builder) init() {
	b.trans, b.last, b.gen, b.since = map[string]*translate.Incremental{}, map[string]*model.Fleet{}, map[string]uint64{}, map[string]map[string]programmedSince{}
	b.contain = map[string]*containment{}
	b.seq, b.parts, b.deny = map[string]uint64{}, map[string]*tenantParts{}, map[string]*denyEntry{}
	b.fleetOf, b.asm = map[string]string{}, map[string]*assembleMemo{}
	b.dirty = map[string]*changedObjects{}
	b.states = map[string]*fleetState{}
}

func (b *Builder) stateOf(fleet string) *fleetState {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.states[fleet]
	if s == nil {
		s = &fleetState{}
		b.states[fleet] = s
	}
	return s
}

func (b *Builder) translator(fleet string) *translate.Incremental {
	b.mu.Lock()
	defer b.mu.Unlock()
	tr := b.trans[fleet]
	if tr == nil {
		tr = &translate.Incremental{}
		b.trans[fleet] = tr
	}
	return tr
}

func (b *Builder) assembleMemo(fleet string) *assembleMemo {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.asm[fleet]
	if m == nil {
		m = &assembleMemo{}
		b.asm[fleet] = m
	}
	return m
}

// SetupWithManager registers the builder.
func (b *Builder) SetupWithManager(mgr ctrl.Manager) error {
	b.init()
	b.pace = newPacer(cmp.Or(b.ReconcileInterval, DefaultReconcileInterval), DefaultReconcileBurst)
	b.acks = make(chan event.GenericEvent, 256)
	if err := mgr.Add(statusRunner{b}); err != nil {
		return err
	}
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
		bld = bld.Watches(&coordinationv1.Lease{}, b.paced(handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			var out []reconcile.Request
			for _, f := range xdsreport.Fleets(o.(*coordinationv1.Lease)) {
				out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Name: f}})
			}
			return out
		})), builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetLabels()[xdsreport.Label] != "" })))
	}
	return bld.
		Named("snapshot").
		WithOptions(controller.Options{NeedLeaderElection: ptr.To(false)}).
		Watches(&v1.LoadBalancer{}, b.paced(handler.EnqueueRequestsFromMapFunc(b.changedInNamespace))).
		Watches(&v1.TenantNodes{}, b.paced(handler.EnqueueRequestsFromMapFunc(b.fleetOfNamespace))).
		Watches(&v1.Route{}, b.paced(handler.EnqueueRequestsFromMapFunc(b.changedInNamespace))).
		Watches(&corev1.Secret{}, b.paced(handler.EnqueueRequestsFromMapFunc(b.changedInNamespace))).
		Watches(&v1.ProxyFleet{}, b.paced(&handler.EnqueueRequestForObject{}), builder.WithPredicates(route.AddressesChanged)).
		Watches(&v1.Tenant{}, b.paced(handler.EnqueueRequestsFromMapFunc(b.tenantChanged))).
		// Pools are in every fleet's backend deny-list.
		Watches(&v1.AddressPool{}, b.paced(handler.EnqueueRequestsFromMapFunc(b.allFleets))).
		WatchesRawSource(source.Channel(b.acks, b.paced(&handler.EnqueueRequestForObject{}))).
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

// changedInNamespace counts an event of a tenant's LoadBalancers, Routes or
// Secrets (so the next reconcile lists that namespace again) and names the
// fleet to reconcile.
func (b *Builder) changedInNamespace(ctx context.Context, o client.Object) []reconcile.Request {
	if strings.HasPrefix(o.GetNamespace(), tenant.NamespacePrefix) {
		b.namespaceChanged(o)
	}
	if b.ownProgrammedEcho(o) {
		return nil // status.go: our own Programmed write coming back
	}
	return b.fleetOfNamespace(ctx, o)
}

// fleetOfNamespace names the fleet of a tenant namespace's object: from
// what the Tenant watch recorded, or (before its first event) the cache,
// without a copy. It runs on every event of the tenants' objects.
func (b *Builder) fleetOfNamespace(ctx context.Context, o client.Object) []reconcile.Request {
	name, ok := strings.CutPrefix(o.GetNamespace(), tenant.NamespacePrefix)
	if !ok {
		return nil
	}
	b.mu.Lock()
	fleet, known := b.fleetOf[name]
	b.mu.Unlock()
	if !known {
		var t v1.Tenant
		if err := b.Client.Get(ctx, types.NamespacedName{Name: name}, &t, client.UnsafeDisableDeepCopy); err != nil {
			return nil
		}
		fleet = fleetName(&t)
		b.mu.Lock()
		if _, set := b.fleetOf[name]; !set {
			b.fleetOf[name] = fleet
		}
		b.mu.Unlock()
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: fleet}}}
}

// tenantChanged records a Tenant's fleet and names it, and the fleet it
// left when it moved.
func (b *Builder) tenantChanged(_ context.Context, o client.Object) []reconcile.Request {
	fleet := fleetName(o.(*v1.Tenant))
	b.mu.Lock()
	old, had := b.fleetOf[o.GetName()]
	b.fleetOf[o.GetName()] = fleet
	b.mu.Unlock()
	out := []reconcile.Request{{NamespacedName: types.NamespacedName{Name: fleet}}}
	if had && old != fleet {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Name: old}})
	}
	return out
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
	key string // servedKey(obj)
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
	if wait := b.pace.wait(fleet, time.Now()); wait > 0 {
		// A burst: this reconcile takes what comes meanwhile too.
		snapshotReconciles.WithLabelValues("paced").Inc()
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	var tenants v1.TenantList // shared with the cache: read only, and nothing made here keeps them
	if err := b.Client.List(ctx, &tenants, client.UnsafeDisableDeepCopy); err != nil {
		return ctrl.Result{}, err
	}
	var pf *v1.ProxyFleet
	if p := (&v1.ProxyFleet{}); b.Client.Get(ctx, types.NamespacedName{Name: fleet}, p, client.UnsafeDisableDeepCopy) == nil {
		pf = p
	}
	httpL, httpsL, noL7 := sharedListeners(pf)
	deny, err := backends.Load(ctx, b.Client, b.BackendDeny)
	if err != nil {
		return ctrl.Result{}, err
	}

	listeners := fmt.Sprintf("%v|%v|%s", httpL, httpsL, noL7)
	denyV := b.denyVersion(fleet, deny)

	b.forgetTenantsBut(tenants.Items)

	var nss []string // the fleet's tenant namespaces, in name order
	cur := map[string]*tenantParts{}
	for i := range tenants.Items {
		t := &tenants.Items[i]
		if fleetName(t) != fleet || !t.DeletionTimestamp.IsZero() {
			continue
		}
		ns := tenant.Namespace(t.Name)
		nodes := &v1.TenantNodes{}
		_ = b.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: v1.TenantNodesName}, nodes, client.UnsafeDisableDeepCopy) // none yet: no endpoints
		key := tenantKey{tenantUID: string(t.UID), tenantGen: t.Generation, nodesUID: string(nodes.UID), nodesGen: nodes.Generation, deny: denyV, listeners: listeners}
		// Only node addresses the tenant may use; manager/nodes reports the rest.
		nodes, _ = backends.Confine(t, nodes, deny)
		nodes, refused := NodesWithinLimits(t, nodes)
		b.tellNodeLimit(nodes, refused)
		parts, err := b.tenantObjects(ctx, t, nodes, key)
		if err != nil {
			return ctrl.Result{}, err
		}
		nss = append(nss, ns)
		cur[ns] = parts
	}
	// The cache lists in no particular order: in another order than the
	// last reconcile's, the fleet's state would be made again from every part.
	slices.Sort(nss)
	if !b.fullOnly {
		if res, done, err := b.reconcileChanges(ctx, fleet, httpL, httpsL, noL7, nss, cur); done {
			return res, err
		}
	}
	return b.reconcileFull(ctx, fleet, httpL, httpsL, noL7, nss, cur)
}

// reconcileFull checks, assembles and translates every part of the fleet
// and decides every object's Programmed condition: the path of a fleet whose
// objects conflict or whose proxies refused a configuration (and of the
// reference builder of the tests).
func (b *Builder) reconcileFull(ctx context.Context, fleet string, httpL, httpsL *model.SharedListener, noL7 string, nss []string, cur map[string]*tenantParts) (ctrl.Result, error) {
	if !b.fullOnly {
		b.paths.full++
		snapshotReconciles.WithLabelValues("full").Inc()
	}
	b.stateOf(fleet).valid = false // made again from all parts next time
	var lbs []*lbPart
	var routes []*routePart
	b.mu.Lock()
	objects := make([]served, 0, len(b.since[fleet])+16) // Programmed is reported on these
	b.mu.Unlock()
	var unserved []*v1.Route
	for _, ns := range nss {
		parts := cur[ns]
		lbs = append(lbs, parts.lbs...)
		for _, p := range parts.routes {
			if p.a == nil {
				unserved = append(unserved, p.rt)
				continue
			}
			routes = append(routes, p)
		}
	}

	// Each Route must translate on its own, so one bad Route never stalls the fleet.
	slices.SortFunc(routes, func(x, y *routePart) int { return route.Older(x.rt, y.rt) })
	var okRoutes []*admittedRoute
	var gateways []admittedLB // Routes on Gateway listeners are checked next to them
	for _, p := range lbs {
		if p.err == nil && p.a.gateway != nil {
			gateways = append(gateways, p.a)
		}
	}
	for _, p := range routes {
		checkRoute(p, fleet, httpL, httpsL, noL7, gateways)
		objects = append(objects, served{obj: p.rt, key: p.skey, gen: p.rt.Generation, reason: p.reason, msg: p.msg})
		if p.reason == "" {
			okRoutes = append(okRoutes, p.a)
		}
	}
	// Each LoadBalancer must translate on its own (next to the shared
	// listeners), so one bad object never stalls the fleet.
	okLBs := make([]admittedLB, 0, len(lbs))
	for _, p := range lbs {
		o := served{obj: p.a.lb, key: p.skey, gen: p.a.lb.Generation}
		if err := checkLB(p, fleet, httpL, httpsL, len(okRoutes) > 0); err != nil {
			o.reason, o.msg = v1.ReasonInvalidSpec, err.Error()
		} else {
			okLBs = append(okLBs, p.a)
		}
		objects = append(objects, o)
	}

	// What the fleet's proxies refused stays out, with its tenant.
	okRoutes, okLBs = b.holdBack(fleet, okRoutes, okLBs, objects)

	// Objects were checked one by one; what is left is a conflict between
	// them. The younger object of a conflict is left out, never the fleet.
	f := b.assembleMemo(fleet).assemble(fleet, httpL, httpsL, okRoutes, okLBs)
	tr := b.translator(fleet)
	out, changed, err := tr.Translate(f)
	st := b.stateOf(fleet)
	if err == nil && st.fellBack {
		b.paths.diverged++
		b.Log.Error(nil, "the incremental model of the fleet did not translate but the full one does (a builder bug; served from the full one)", "fleet", fleet)
	}
	st.fellBack = false
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
		if out, changed, err = tr.Translate(f); err != nil {
			// resolveConflicts made f translate; this is a translator bug.
			return ctrl.Result{}, fmt.Errorf("fleet %s: %w", fleet, err)
		}
	}

	b.mu.Lock()
	gen, set := b.gen[fleet]
	b.mu.Unlock()
	if changed || !set {
		gen = b.XDS.Set(fleet, out.ByType())
		b.mu.Lock()
		b.gen[fleet], b.last[fleet] = gen, f
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
	prev, next := b.since[fleet], make(map[string]programmedSince, len(objects))
	for _, o := range objects {
		if o.reason != "" {
			continue
		}
		key := o.key
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
	if b.WriteStatus != nil && !b.WriteStatus() {
		return ctrl.Result{}, nil // another replica writes status
	}
	var writes []programmedWrite
	waiting, programmed := waitingMessage(fleet), "served by fleet "+fleet
	for _, o := range objects {
		cond := metav1.Condition{Type: v1.ConditionProgrammed, Status: metav1.ConditionFalse, Reason: o.reason, Message: o.msg, ObservedGeneration: o.gen}
		if o.reason == "" {
			cond.Reason, cond.Message = v1.ReasonPending, waiting
			if acked >= next[o.key].xdsGeneration {
				cond.Status, cond.Reason, cond.Message = metav1.ConditionTrue, v1.ReasonProgrammed, programmed
			}
		}
		if b.needsProgrammedWrite(o.obj, &cond) {
			writes = append(writes, programmedWrite{o.obj, cond})
		}
	}
	// A Route no longer accepted is no longer programmed either.
	for _, rt := range unserved {
		if meta.FindStatusCondition(rt.Status.Conditions, v1.ConditionProgrammed) == nil {
			continue
		}
		cond := metav1.Condition{Type: v1.ConditionProgrammed, Status: metav1.ConditionFalse, Reason: v1.ReasonPending,
			Message: "no hostname of the route is accepted", ObservedGeneration: rt.Generation}
		if b.needsProgrammedWrite(rt, &cond) {
			writes = append(writes, programmedWrite{rt, cond})
		}
	}
	return ctrl.Result{}, b.writeProgrammed(ctx, fleet, writes)
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
