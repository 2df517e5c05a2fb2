// Package admission admits tenant LoadBalancers: it checks them against their
// Tenant (limits), gives each one a VIP from the Tenant's AddressPool, and
// reports the outcome as the Accepted condition. One bad object gets a
// condition and an event; it never blocks the others.
package admission

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/manager/ipam"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// Finalizer holds a LoadBalancer until its address is back in the pool.
const Finalizer = "fleetlb.io/address-release"

// LoadBalancerReconciler admits LoadBalancers and allocates their VIPs.
type LoadBalancerReconciler struct {
	Client   client.Client
	Recorder recorder.EventRecorder

	mu    sync.Mutex
	pools map[string]*pool // AddressPool name → allocator
	retry chan event.TypedGenericEvent[*v1.LoadBalancer]
}

type pool struct {
	generation int64
	alloc      *ipam.Allocator
	err        error // why the pool's ranges are unusable
}

// SetupWithManager registers the controller.
func (r *LoadBalancerReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.pools = map[string]*pool{}
	r.retry = make(chan event.TypedGenericEvent[*v1.LoadBalancer], 1024)
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1.LoadBalancer{}).
		Watches(&v1.Tenant{}, handler.EnqueueRequestsFromMapFunc(r.forTenant)).
		Watches(&v1.AddressPool{}, handler.EnqueueRequestsFromMapFunc(r.forPool)).
		WatchesRawSource(source.Channel(r.retry, &handler.TypedEnqueueRequestForObject[*v1.LoadBalancer]{})).
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
func (r *LoadBalancerReconciler) releaseFor(ctx context.Context, t *v1.Tenant, lb *v1.LoadBalancer) error {
	who := holder(t, lb)
	if who != owner(lb) {
		var tenants v1.TenantList
		if err := r.Client.List(ctx, &tenants); err != nil {
			return err
		}
		for i := range tenants.Items {
			other := &tenants.Items[i]
			if other.Spec.AddressPool != t.Spec.AddressPool {
				continue
			}
			var list v1.LoadBalancerList
			if err := r.Client.List(ctx, &list, client.InNamespace(tenant.Namespace(other.Name))); err != nil {
				return err
			}
			for j := range list.Items {
				m := &list.Items[j]
				if owner(m) != owner(lb) && m.DeletionTimestamp.IsZero() && holder(other, m) == who && len(m.Status.Addresses) > 0 {
					return nil // still in use by another member
				}
			}
		}
	}
	r.release(ctx, t.Spec.AddressPool, who)
	return nil
}

// Reconcile implements reconcile.Reconciler.
func (r *LoadBalancerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var lb v1.LoadBalancer
	if err := r.Client.Get(ctx, req.NamespacedName, &lb); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	name, ok := tenant.Of(lb.Namespace)
	var t v1.Tenant
	if ok {
		if err := r.Client.Get(ctx, types.NamespacedName{Name: name}, &t); err != nil && !apierrors.IsNotFound(err) {
			return ctrl.Result{}, err
		} else if err != nil {
			ok = false
		}
	}

	if !lb.DeletionTimestamp.IsZero() {
		if ok {
			if err := r.releaseFor(ctx, &t, &lb); err != nil {
				return ctrl.Result{}, err
			}
		}
		if controllerutil.RemoveFinalizer(&lb, Finalizer) {
			return ctrl.Result{}, r.Client.Update(ctx, &lb)
		}
		return ctrl.Result{}, nil
	}
	if !ok {
		return ctrl.Result{}, r.refuse(ctx, &lb, netip.Addr{}, v1.ReasonTenantNotFound, fmt.Sprintf("namespace %s belongs to no Tenant", lb.Namespace))
	}
	if controllerutil.AddFinalizer(&lb, Finalizer) {
		if err := r.Client.Update(ctx, &lb); err != nil {
			return ctrl.Result{}, err
		}
	}

	if reason, msg, err := r.checkLimits(ctx, &t, &lb); err != nil {
		return ctrl.Result{}, err
	} else if reason != "" {
		if err := r.releaseFor(ctx, &t, &lb); err != nil {
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, r.refuse(ctx, &lb, netip.Addr{}, reason, msg)
	}

	addr, reason, msg, err := r.allocate(ctx, &t, &lb)
	if err != nil {
		return ctrl.Result{}, err
	}
	if reason != "" {
		return ctrl.Result{}, r.refuse(ctx, &lb, r.held(t.Spec.AddressPool, holder(&t, &lb)), reason, msg)
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
	var list v1.LoadBalancerList
	if err := r.Client.List(ctx, &list, client.InNamespace(lb.Namespace)); err != nil {
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

// allocate gives the LoadBalancer its address, or a reason why not.
func (r *LoadBalancerReconciler) allocate(ctx context.Context, t *v1.Tenant, lb *v1.LoadBalancer) (netip.Addr, string, string, error) {
	var ap v1.AddressPool
	if err := r.Client.Get(ctx, types.NamespacedName{Name: t.Spec.AddressPool}, &ap); apierrors.IsNotFound(err) {
		return netip.Addr{}, v1.ReasonPoolNotFound, fmt.Sprintf("address pool %q of tenant %s does not exist", t.Spec.AddressPool, t.Name), nil
	} else if err != nil {
		return netip.Addr{}, "", "", err
	}
	var requested netip.Addr
	if lb.Spec.LoadBalancerIP != "" {
		a, err := netip.ParseAddr(string(lb.Spec.LoadBalancerIP))
		if err != nil {
			return netip.Addr{}, v1.ReasonAddressNotAvailable, fmt.Sprintf("requested address %q is not an IP address", lb.Spec.LoadBalancerIP), nil
		}
		requested = a
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	p, err := r.poolLocked(ctx, &ap)
	if err != nil {
		return netip.Addr{}, "", "", err
	}
	if p.err != nil {
		return netip.Addr{}, v1.ReasonAddressNotAvailable, fmt.Sprintf("address pool %s is unusable: %v", ap.Name, p.err), nil
	}
	if !requested.IsValid() && ap.Spec.AutoAssign != nil && !*ap.Spec.AutoAssign {
		if cur, ok := p.alloc.Lookup(holder(t, lb)); ok {
			return cur, "", "", nil
		}
		return netip.Addr{}, v1.ReasonAddressNotAvailable, fmt.Sprintf("address pool %s hands out requested addresses only", ap.Name), nil
	}
	addr, err := p.alloc.Allocate(holder(t, lb), requested)
	var inUse *ipam.InUseError
	switch {
	case err == nil:
		return addr, "", "", nil
	case errors.As(err, &inUse):
		if strings.HasPrefix(inUse.Owner, fleetOwner("")) {
			// A fleet is shared infrastructure, not another tenant: it may be named.
			return netip.Addr{}, v1.ReasonAddressInUse, fmt.Sprintf("requested address %s is the address of %s", inUse.Addr, inUse.Owner), nil
		}
		// Never name the holder: it may be another tenant's.
		return netip.Addr{}, v1.ReasonAddressInUse, fmt.Sprintf("requested address %s is already in use", inUse.Addr), nil
	case errors.Is(err, ipam.ErrNotInPool):
		return netip.Addr{}, v1.ReasonAddressNotAvailable, fmt.Sprintf("requested address %s is not in address pool %s", requested, ap.Name), nil
	case errors.Is(err, ipam.ErrExhausted):
		return netip.Addr{}, v1.ReasonPoolExhausted, fmt.Sprintf("address pool %s has no free address", ap.Name), nil
	default:
		return netip.Addr{}, "", "", err
	}
}

// poolLocked returns the pool's allocator, rebuilt from every LoadBalancer's
// status before it hands out anything: that is what keeps addresses stable
// across restarts and never gives one address to two objects.
func (r *LoadBalancerReconciler) poolLocked(ctx context.Context, ap *v1.AddressPool) (*pool, error) {
	if p := r.pools[ap.Name]; p != nil && p.generation == ap.Generation {
		return p, nil
	}
	specs := make([]string, len(ap.Spec.Addresses))
	for i, a := range ap.Spec.Addresses {
		specs[i] = string(a)
	}
	p := &pool{generation: ap.Generation}
	if p.alloc, p.err = ipam.Parse(specs); p.err != nil {
		r.pools[ap.Name] = p
		return p, nil
	}
	// Fleet VIPs first: they are infrastructure every tenant's routes depend on.
	var fleets v1.ProxyFleetList
	if err := r.Client.List(ctx, &fleets); err != nil {
		return nil, err
	}
	for _, f := range fleets.Items {
		for _, a := range f.Status.Addresses {
			if addr, err := netip.ParseAddr(string(a.IP)); err == nil && p.alloc.Contains(addr) {
				_ = p.alloc.Reserve(fleetOwner(f.Name), addr)
			}
		}
	}
	var tenants v1.TenantList
	if err := r.Client.List(ctx, &tenants); err != nil {
		return nil, err
	}
	var lbs []v1.LoadBalancer
	holders := map[string]string{} // owner → holder
	for _, t := range tenants.Items {
		if t.Spec.AddressPool != ap.Name {
			continue
		}
		var list v1.LoadBalancerList
		if err := r.Client.List(ctx, &list, client.InNamespace(tenant.Namespace(t.Name))); err != nil {
			return nil, err
		}
		for i := range list.Items {
			holders[owner(&list.Items[i])] = holder(&t, &list.Items[i])
		}
		lbs = append(lbs, list.Items...)
	}
	// Oldest first: if status ever disagreed, the older claim keeps the address.
	slices.SortFunc(lbs, func(a, b v1.LoadBalancer) int {
		return cmp.Or(a.CreationTimestamp.Compare(b.CreationTimestamp.Time), cmp.Compare(owner(&a), owner(&b)))
	})
	for i := range lbs {
		for _, a := range lbs[i].Status.Addresses {
			if addr, err := netip.ParseAddr(string(a.IP)); err == nil && p.alloc.Contains(addr) {
				_ = p.alloc.Reserve(holders[owner(&lbs[i])], addr)
			}
		}
	}
	r.pools[ap.Name] = p
	return p, nil
}

// held is the address an owner holds in a pool, if any.
func (r *LoadBalancerReconciler) held(poolName, who string) netip.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p := r.pools[poolName]; p != nil && p.alloc != nil {
		a, _ := p.alloc.Lookup(who)
		return a
	}
	return netip.Addr{}
}

// release frees an owner's address and wakes the LoadBalancers waiting for
// one: those refused for an exhausted pool, and those that asked for an
// address someone held (it may be this one).
func (r *LoadBalancerReconciler) release(ctx context.Context, poolName, who string) {
	r.mu.Lock()
	p := r.pools[poolName]
	had := false
	if p != nil && p.alloc != nil {
		_, had = p.alloc.Lookup(who)
		p.alloc.Release(who)
	}
	r.mu.Unlock()
	if !had {
		return
	}
	var list v1.LoadBalancerList
	if err := r.Client.List(ctx, &list); err != nil {
		return
	}
	for i := range list.Items {
		if c := meta.FindStatusCondition(list.Items[i].Status.Conditions, v1.ConditionAccepted); c != nil &&
			(c.Reason == v1.ReasonPoolExhausted || c.Reason == v1.ReasonAddressInUse) {
			select {
			case r.retry <- event.TypedGenericEvent[*v1.LoadBalancer]{Object: &list.Items[i]}:
			default: // full: those waiting are retried on their next change
			}
		}
	}
}

func (r *LoadBalancerReconciler) forTenant(ctx context.Context, o client.Object) []reconcile.Request {
	return r.inNamespaces(ctx, tenant.Namespace(o.GetName()))
}

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
	return r.inNamespaces(ctx, ns...)
}

func (r *LoadBalancerReconciler) inNamespaces(ctx context.Context, namespaces ...string) []reconcile.Request {
	var reqs []reconcile.Request
	for _, ns := range namespaces {
		var list v1.LoadBalancerList
		if err := r.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
			continue
		}
		for _, lb := range list.Items {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&lb)})
		}
	}
	return reqs
}
