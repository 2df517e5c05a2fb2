// Package admission admits tenant LoadBalancers: it checks them against their
// Tenant (limits), gives each one a VIP from the Tenant's AddressPool, and
// reports the outcome as the Accepted condition. One bad object gets a
// condition and an event; it never blocks the others.
//
// One allocator covers every pool (an address has one holder even where pools
// overlap; the younger of two overlapping pools hands out nothing new). It is
// rebuilt from status at start and releases by its own record of holders, so
// a LoadBalancer deleted without its finalizer still frees its address. A
// released address waits Quarantine before another tenant group may have it,
// persisted in the AddressPool annotation AnnotationQuarantine.
package admission

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/manager/ipam"
	"github.com/fleetlb/fleetlb/manager/pool"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// Finalizer holds a LoadBalancer until its address is back in the pool.
const Finalizer = v1.FinalizerAddressRelease

// LoadBalancerReconciler admits LoadBalancers and allocates their VIPs.
type LoadBalancerReconciler struct {
	Client   client.Client
	Recorder recorder.EventRecorder
	// Quarantine keeps a released address from other tenant groups this
	// long (0: none); the group that released it may take it back at once.
	Quarantine time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Workers is how many LoadBalancers are admitted at once (DefaultWorkers
	// when 0): each reconcile waits on its writes, the allocator is locked.
	Workers int

	mu sync.Mutex
	// space is the one allocator over every pool (nil until rebuilt from status).
	space *ipam.Allocator
	pools map[string]*poolDef // AddressPool name → its ranges
	// members: LoadBalancer (or ProxyFleet) owner key → the holder whose
	// address it uses (itself, or a global name shared by several).
	members   map[string]string
	persistMu sync.Mutex
	retry     chan event.TypedGenericEvent[*v1.LoadBalancer]

	// liveMu guards live: namespace → names of its LoadBalancers not being
	// deleted, kept from the watch, so the limits cost nothing while a
	// tenant is below them.
	liveMu sync.Mutex
	live   map[string]map[string]bool
}

// tenantNamed is the cache's Tenant of that name, or nil: shared with the
// cache, so only read it.
func (r *LoadBalancerReconciler) tenantNamed(ctx context.Context, name string) (*v1.Tenant, error) {
	return tenant.Lookup(ctx, r.Client, name)
}

// DefaultWorkers is LoadBalancerReconciler.Workers when unset.
const DefaultWorkers = 16

// SetupWithManager registers the index and the controller.
func (r *LoadBalancerReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.pools = map[string]*poolDef{}
	r.retry = make(chan event.TypedGenericEvent[*v1.LoadBalancer], 1024)
	r.live = map[string]map[string]bool{}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1.LoadBalancer{}, IndexRefused, indexRefused); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		// Our own writes (the finalizer, status) and the snapshot's Programmed
		// are no news: only a new spec, a deletion or a lost finalizer is.
		For(&v1.LoadBalancer{}, builder.WithPredicates(admissionRelevant)).
		// The tenant's count, and, over a limit, the others it moves.
		Watches(&v1.LoadBalancer{}, handler.Funcs{CreateFunc: r.counted, UpdateFunc: r.countedUpdate, DeleteFunc: r.uncounted}).
		// Tenant status (counts, hostname claims) changes with every object: only its spec and deletion matter.
		Watches(&v1.Tenant{}, handler.EnqueueRequestsFromMapFunc(r.forTenant), builder.WithPredicates(specOrDeletion)).
		// Spec changes only: the quarantine annotation written here is no news.
		Watches(&v1.AddressPool{}, handler.EnqueueRequestsFromMapFunc(r.forPool), builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesRawSource(source.Channel(r.retry, &handler.TypedEnqueueRequestForObject[*v1.LoadBalancer]{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: cmp.Or(r.Workers, DefaultWorkers)}).
		Named("loadbalancer-admission").
		Complete(r)
}

func owner(lb *v1.LoadBalancer) string { return lb.Namespace + "/" + lb.Name }

// holder is who holds a LoadBalancer's address in the pool: the LoadBalancer
// itself, or, for a member of a global load balancer, the global name within
// the tenant group (or the tenant, without a group), so every member gets the
// same VIP.
func holder(t *v1.Tenant, lb *v1.LoadBalancer) string {
	if lb.Spec.Global == nil || lb.Spec.Global.Name == "" {
		return owner(lb)
	}
	return "global:" + tenant.GroupKey(t) + "/" + lb.Spec.Global.Name
}

// releaseFor frees what lb holds, unless it is a global name another live
// member still uses.
func (r *LoadBalancerReconciler) releaseFor(ctx context.Context, _ *v1.Tenant, lb *v1.LoadBalancer) error {
	return r.forget(ctx, owner(lb))
}

// Reconcile implements reconcile.Reconciler.
func (r *LoadBalancerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, err error) {
	var lb v1.LoadBalancer
	if err := r.Client.Get(ctx, req.NamespacedName, &lb); apierrors.IsNotFound(err) {
		// Gone, with or without our finalizer: what it held goes back to the
		// pool by the allocator's own record.
		return ctrl.Result{}, r.forget(ctx, req.String())
	} else if err != nil {
		return ctrl.Result{}, err
	}
	name, ok := tenant.Of(lb.Namespace)
	var t *v1.Tenant
	if ok {
		if t, err = r.tenantNamed(ctx, name); err != nil {
			return ctrl.Result{}, err
		}
		ok = t != nil
	}

	if !lb.DeletionTimestamp.IsZero() {
		if err := r.forget(ctx, owner(&lb)); err != nil {
			return ctrl.Result{}, err
		}
		if controllerutil.RemoveFinalizer(&lb, Finalizer) {
			return ctrl.Result{}, r.Client.Update(ctx, &lb)
		}
		return ctrl.Result{}, nil
	}
	if !ok {
		if err := r.forget(ctx, owner(&lb)); err != nil {
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, r.refuse(ctx, &lb, netip.Addr{}, v1.ReasonTenantNotFound, fmt.Sprintf("namespace %s belongs to no Tenant", lb.Namespace))
	}
	// The finalizer goes on in parallel with the status write below: two
	// round trips at once, not one after the other.
	defer r.addFinalizer(ctx, &lb)(&err)

	if reason, msg, err := r.checkLimits(ctx, t, &lb); err != nil {
		return ctrl.Result{}, err
	} else if reason != "" {
		if err := r.releaseFor(ctx, t, &lb); err != nil {
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, r.refuse(ctx, &lb, netip.Addr{}, reason, msg)
	}

	if reason, msg := checkNodePorts(t, &lb); reason != "" {
		// Not served, so it holds no address (as over the limits).
		if err := r.releaseFor(ctx, t, &lb); err != nil {
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, r.refuse(ctx, &lb, netip.Addr{}, reason, msg)
	}

	addr, retryAt, reason, msg, err := r.allocate(ctx, t, &lb)
	if err != nil {
		return ctrl.Result{}, err
	}
	if reason != "" {
		var res ctrl.Result
		if !retryAt.IsZero() {
			// Retried when the quarantine it waits for ends; nothing polls.
			res.RequeueAfter = max(retryAt.Sub(r.now()), time.Millisecond)
		}
		return res, r.refuse(ctx, &lb, r.held(owner(&lb)), reason, msg)
	}
	status := lb.Status.DeepCopy()
	status.ObservedGeneration = lb.Generation
	status.Addresses = []v1.Address{{IP: v1.IPAddress(addr.String()), IPMode: v1.IPModeProxy}}
	meta.SetStatusCondition(&status.Conditions, metav1.Condition{
		Type: v1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: v1.ReasonAccepted,
		Message: fmt.Sprintf("address %s from pool %s", addr, t.Spec.AddressPool), ObservedGeneration: lb.Generation,
	})
	return ctrl.Result{}, r.writeStatus(ctx, &lb, status)
}

// addFinalizer starts adding the Finalizer (when missing) and returns the
// wait for it, which sets *err if the write failed and *err was nil. It is a
// JSON patch that tests the finalizers it extends instead of the
// resourceVersion: it does not conflict with the status write it runs beside,
// and it never drops a finalizer someone else added meanwhile.
func (r *LoadBalancerReconciler) addFinalizer(ctx context.Context, lb *v1.LoadBalancer) func(*error) {
	if controllerutil.ContainsFinalizer(lb, Finalizer) {
		return func(*error) {}
	}
	ops := []map[string]any{{"op": "test", "path": "/metadata/finalizers", "value": nil}, {"op": "add", "path": "/metadata/finalizers", "value": []string{Finalizer}}}
	if len(lb.Finalizers) > 0 {
		ops = []map[string]any{{"op": "test", "path": "/metadata/finalizers", "value": lb.Finalizers}, {"op": "add", "path": "/metadata/finalizers/-", "value": Finalizer}}
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return func(e *error) { *e = cmp.Or(*e, err) }
	}
	target := lb.DeepCopy()
	done := make(chan error, 1)
	go func() { done <- r.Client.Patch(ctx, target, client.RawPatch(types.JSONPatchType, patch)) }()
	return func(err *error) {
		if ferr := <-done; ferr != nil && *err == nil {
			*err = ferr
		}
	}
}

// refuse records why a LoadBalancer is not admitted (an event once per
// change). Its status keeps only an address it still holds: a refused request
// for a new address leaves the old one serving.
func (r *LoadBalancerReconciler) refuse(ctx context.Context, lb *v1.LoadBalancer, held netip.Addr, reason, msg string) error {
	status := lb.Status.DeepCopy()
	status.ObservedGeneration = lb.Generation
	status.Addresses = nil
	if held.IsValid() {
		status.Addresses = []v1.Address{{IP: v1.IPAddress(held.String()), IPMode: v1.IPModeProxy}}
	}
	prev := meta.FindStatusCondition(status.Conditions, v1.ConditionAccepted)
	if prev == nil || prev.Reason != reason || prev.Message != msg {
		r.Recorder.Eventf(lb, nil, corev1.EventTypeWarning, reason, "Admit", "%s", msg)
	}
	meta.SetStatusCondition(&status.Conditions, metav1.Condition{
		Type: v1.ConditionAccepted, Status: metav1.ConditionFalse, Reason: reason, Message: msg, ObservedGeneration: lb.Generation,
	})
	return r.writeStatus(ctx, lb, status)
}

// writeStatus patches status only when it changed.
func (r *LoadBalancerReconciler) writeStatus(ctx context.Context, lb *v1.LoadBalancer, status *v1.LoadBalancerStatus) error {
	status.Ports = v1.PortsSummary(lb.Spec.Ports)
	if equality.Semantic.DeepEqual(&lb.Status, status) {
		return nil
	}
	patch := client.MergeFrom(lb.DeepCopy())
	lb.Status = *status
	return r.Client.Status().Patch(ctx, lb, patch)
}

// checkLimits admits the oldest LoadBalancers up to the Tenant's limits
// (finite defaults when unset): maxLoadBalancers objects, and maxAddresses
// VIPs, where LoadBalancers joined by a global name share one.
func (r *LoadBalancerReconciler) checkLimits(ctx context.Context, t *v1.Tenant, lb *v1.LoadBalancer) (string, string, error) {
	lim := &t.Spec.Limits
	// Within the limits no order matters: nothing to list. The count comes
	// from the watch; one that lags behind is corrected when the watch sees
	// the tenant go over (overLimits enqueues every LoadBalancer of it).
	if underLimits(t, r.liveCount(lb.Namespace)) {
		return "", "", nil
	}
	var list v1.LoadBalancerList
	// Only read here (the slice is ours, the objects the cache's): no copies.
	if err := r.Client.List(ctx, &list, client.InNamespace(lb.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return "", "", err
	}
	items := slices.DeleteFunc(list.Items, func(o v1.LoadBalancer) bool { return !o.DeletionTimestamp.IsZero() })
	slices.SortFunc(items, func(a, b v1.LoadBalancer) int {
		return cmp.Or(a.CreationTimestamp.Compare(b.CreationTimestamp.Time), cmp.Compare(a.Name, b.Name))
	})
	idx := slices.IndexFunc(items, func(o v1.LoadBalancer) bool { return o.Name == lb.Name })
	if idx < 0 {
		return "", "", nil // gone from the cache: its deletion reconciles it again
	}
	if idx >= lim.LoadBalancers() {
		return v1.ReasonLimitExceeded, fmt.Sprintf("over the tenant's limit maxLoadBalancers=%d: this is load balancer number %d (oldest first)",
			lim.LoadBalancers(), idx+1), nil
	}
	// The addresses the older admitted LoadBalancers hold, one per holder.
	holders := map[string]bool{}
	for i := range items[:idx] {
		holders[holder(t, &items[i])] = true
	}
	if who := holder(t, lb); !holders[who] && len(holders) >= lim.Addresses() {
		return v1.ReasonLimitExceeded, fmt.Sprintf("over the tenant's limit maxAddresses=%d: older load balancers hold %d addresses",
			lim.Addresses(), len(holders)), nil
	}
	return "", "", nil
}

// allocate gives the LoadBalancer its address, or a reason why not (and,
// when it waits for a quarantine to end, when to try again). Messages are for
// the tenant: they never name another tenant or its objects.
func (r *LoadBalancerReconciler) allocate(ctx context.Context, t *v1.Tenant, lb *v1.LoadBalancer) (netip.Addr, time.Time, string, string, error) {
	var none netip.Addr
	var never time.Time
	var ap v1.AddressPool
	if err := r.Client.Get(ctx, types.NamespacedName{Name: t.Spec.AddressPool}, &ap); apierrors.IsNotFound(err) {
		return none, never, v1.ReasonPoolNotFound, fmt.Sprintf("address pool %q of tenant %s does not exist", t.Spec.AddressPool, t.Name), nil
	} else if err != nil {
		return none, never, "", "", err
	}
	var requested netip.Addr
	if lb.Spec.LoadBalancerIP != "" {
		a, err := netip.ParseAddr(string(lb.Spec.LoadBalancerIP))
		if err != nil {
			return none, never, v1.ReasonAddressNotAvailable, fmt.Sprintf("requested address %q is not an IP address", lb.Spec.LoadBalancerIP), nil
		}
		requested = a.Unmap()
	}
	var pools v1.AddressPoolList
	if err := r.Client.List(ctx, &pools); err != nil {
		return none, never, "", "", err
	}

	r.mu.Lock()
	p, err := r.poolLocked(ctx, &ap)
	if err != nil {
		r.mu.Unlock()
		return none, never, "", "", err
	}
	who, group, now := holder(t, lb), groupOf(t), r.now()
	if p.err != nil {
		r.mu.Unlock()
		return none, never, v1.ReasonAddressNotAvailable, fmt.Sprintf("address pool %s is unusable: %v", ap.Name, p.err), nil
	}
	cur, holds := r.space.Lookup(who)
	holds = holds && p.ranges.Allocatable(cur) && (!requested.IsValid() || requested == cur)
	if !holds && len(pool.OverlapsOlder(&ap, p.ranges, pools.Items)) > 0 {
		// The younger of two overlapping pools keeps what it handed out but hands out nothing new.
		r.mu.Unlock()
		return none, never, v1.ReasonAddressNotAvailable, fmt.Sprintf("address pool %s overlaps an older address pool and hands out no new address until an administrator removes the overlap", ap.Name), nil
	}
	if !holds && !requested.IsValid() && ap.Spec.AutoAssign != nil && !*ap.Spec.AutoAssign {
		r.mu.Unlock()
		return none, never, v1.ReasonAddressNotAvailable, fmt.Sprintf("address pool %s hands out requested addresses only", ap.Name), nil
	}
	addr, err := r.space.Allocate(p.ranges, who, group, requested, now)
	var freed netip.Addr
	var hadFreed bool
	if err == nil {
		freed, hadFreed = r.setMemberLocked(owner(lb), who)
	}
	next, waiting := r.space.NextRelease(p.ranges, group, now)
	r.mu.Unlock()
	if hadFreed {
		if perr := r.released(ctx, freed); perr != nil {
			return none, never, "", "", perr
		}
	}

	var inUse *ipam.InUseError
	var quarantined *ipam.QuarantinedError
	switch {
	case err == nil:
		return addr, never, "", "", nil
	case errors.As(err, &inUse):
		return none, never, v1.ReasonAddressInUse, fmt.Sprintf("requested address %s is %s", inUse.Addr, heldBy(lb, group, inUse)), nil
	case errors.As(err, &quarantined):
		return none, quarantined.Until, ReasonAddressQuarantined, fmt.Sprintf("requested address %s was released by another tenant less than %s ago; it can be taken from %s",
			quarantined.Addr, r.Quarantine, quarantined.Until.UTC().Format(time.RFC3339)), nil
	case errors.Is(err, ipam.ErrNotInPool):
		return none, never, v1.ReasonAddressNotAvailable, fmt.Sprintf("requested address %s is not in address pool %s", requested, ap.Name), nil
	case errors.Is(err, ipam.ErrReserved):
		return none, never, v1.ReasonAddressNotAvailable, fmt.Sprintf("requested address %s and is never handed out", strings.TrimPrefix(err.Error(), ipam.ErrReserved.Error()+": ")), nil
	case errors.Is(err, ipam.ErrExhausted):
		if waiting {
			return none, next, v1.ReasonPoolExhausted, fmt.Sprintf("address pool %s has no free address; the next one leaves its quarantine at %s", ap.Name, next.UTC().Format(time.RFC3339)), nil
		}
		return none, never, v1.ReasonPoolExhausted, fmt.Sprintf("address pool %s has no free address", ap.Name), nil
	default:
		return none, never, "", "", err
	}
}

// heldBy says who holds an address, as far as the tenant of lb (of group)
// may know: its own LoadBalancers and its group's global names by name,
// anyone else as "another tenant".
func heldBy(lb *v1.LoadBalancer, group string, e *ipam.InUseError) string {
	if ns, name, ok := strings.Cut(e.Owner, "/"); ok && ns == lb.Namespace {
		return "already allocated to LoadBalancer " + name
	}
	if name, ok := strings.CutPrefix(e.Owner, "global:"+group+"/"); ok && e.Group == group {
		return "already allocated to the global load balancer " + name + " of this tenant's group"
	}
	if f, ok := strings.CutPrefix(e.Owner, "proxyfleet:"); ok {
		return "the shared VIP of proxy fleet " + f
	}
	return "in use by another tenant"
}

// held is the address a LoadBalancer holds, if any.
func (r *LoadBalancerReconciler) held(lbOwner string) netip.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.space == nil {
		return netip.Addr{}
	}
	who, ok := r.members[lbOwner]
	if !ok {
		return netip.Addr{}
	}
	a, _ := r.space.Lookup(who)
	return a
}

func (r *LoadBalancerReconciler) forTenant(ctx context.Context, o client.Object) []reconcile.Request {
	return r.inNamespaces(ctx, tenant.Namespace(o.GetName()))
}

// forPool maps a pool's change to its tenants' LoadBalancers, and to every
// refused one: a pool that appears, changes or goes can end another pool's
// overlap.
func (r *LoadBalancerReconciler) forPool(ctx context.Context, o client.Object) []reconcile.Request {
	var tenants v1.TenantList
	if err := r.Client.List(ctx, &tenants); err != nil {
		return nil
	}
	var ns []string
	for _, t := range tenants.Items {
		if t.Spec.AddressPool == o.GetName() {
			ns = append(ns, tenant.Namespace(t.Name))
		}
	}
	reqs := r.inNamespaces(ctx, ns...)
	for _, lb := range r.waiting(ctx, refusedAny) {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&lb)})
	}
	return reqs
}

func (r *LoadBalancerReconciler) inNamespaces(ctx context.Context, namespaces ...string) []reconcile.Request {
	var reqs []reconcile.Request
	for _, ns := range namespaces {
		var list v1.LoadBalancerList
		if err := r.Client.List(ctx, &list, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
			continue
		}
		for _, lb := range list.Items {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&lb)})
		}
	}
	return reqs
}
