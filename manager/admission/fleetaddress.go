package admission

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/manager/ipam"
)

// fleetOwner names a ProxyFleet as an address holder; no LoadBalancer owner
// ("namespace/name") can look like it.
func fleetOwner(name string) string { return "proxyfleet:" + name }

// FleetAddressReconciler gives each ProxyFleet its shared HTTP/HTTPS VIP in
// status.addresses: spec.vip when set (reserved in the pool that contains it, so
// no LoadBalancer gets it), else one allocated from spec.addressPool. It shares
// the LoadBalancer allocator, so one address never has two owners.
type FleetAddressReconciler struct {
	LB *LoadBalancerReconciler
}

// SetupWithManager registers the controller; the LoadBalancer reconciler must be set up first.
func (r *FleetAddressReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.LB == nil || r.LB.pools == nil {
		return errors.New("FleetAddressReconciler needs a set-up LoadBalancerReconciler")
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1.ProxyFleet{}).
		Watches(&v1.AddressPool{}, handler.EnqueueRequestsFromMapFunc(r.allFleets)).
		Named("proxyfleet-address").
		Complete(r)
}

func (r *FleetAddressReconciler) allFleets(ctx context.Context, _ client.Object) []reconcile.Request {
	var list v1.ProxyFleetList
	if err := r.LB.Client.List(ctx, &list); err != nil {
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, f := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: f.Name}})
	}
	return reqs
}

// Reconcile implements reconcile.Reconciler.
func (r *FleetAddressReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	who := fleetOwner(req.Name)
	var f v1.ProxyFleet
	if err := r.LB.Client.Get(ctx, req.NamespacedName, &f); client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, err
	} else if err != nil || !f.DeletionTimestamp.IsZero() {
		r.releaseEverywhere(ctx, who, "")
		return ctrl.Result{}, nil
	}
	var pools v1.AddressPoolList
	if err := r.LB.Client.List(ctx, &pools); err != nil {
		return ctrl.Result{}, err
	}
	addr, poolName, reason, msg, err := r.allocate(ctx, &f, pools.Items)
	if err != nil {
		return ctrl.Result{}, err
	}
	r.releaseEverywhere(ctx, who, poolName)
	var want []v1.Address
	if addr.IsValid() {
		want = []v1.Address{{IP: v1.IPAddress(addr.String()), IPMode: v1.IPModeProxy}}
	} else if reason != "" {
		r.LB.Recorder.Eventf(&f, nil, corev1.EventTypeWarning, reason, "AllocateAddress", msg)
	}
	if slices.Equal(f.Status.Addresses, want) {
		return ctrl.Result{}, nil
	}
	patch := client.MergeFrom(f.DeepCopy())
	f.Status.Addresses = want
	return ctrl.Result{}, r.LB.Client.Status().Patch(ctx, &f, patch)
}

// allocate returns the fleet's address and the pool it is held in ("" when it
// lies in no pool), or the reason it has none.
func (r *FleetAddressReconciler) allocate(ctx context.Context, f *v1.ProxyFleet, pools []v1.AddressPool) (netip.Addr, string, string, string, error) {
	who := fleetOwner(f.Name)
	r.LB.mu.Lock()
	defer r.LB.mu.Unlock()
	if f.Spec.VIP != "" {
		vip, err := netip.ParseAddr(string(f.Spec.VIP))
		if err != nil {
			return netip.Addr{}, "", v1.ReasonAddressNotAvailable, fmt.Sprintf("spec.vip %q is not an IP address", f.Spec.VIP), nil
		}
		for i := range pools {
			p, err := r.LB.poolLocked(ctx, &pools[i])
			if err != nil {
				return netip.Addr{}, "", "", "", err
			}
			if p.alloc == nil || !p.alloc.Contains(vip) {
				continue
			}
			if _, err := p.alloc.Allocate(who, vip); err != nil {
				var inUse *ipam.InUseError
				if errors.As(err, &inUse) {
					return netip.Addr{}, "", v1.ReasonAddressInUse, fmt.Sprintf("spec.vip %s is already allocated to %s", vip, inUse.Owner), nil
				}
				return netip.Addr{}, "", "", "", err
			}
			return vip, pools[i].Name, "", "", nil
		}
		return vip, "", "", "", nil // outside every pool: the admin's to route
	}
	if f.Spec.AddressPool == "" {
		return netip.Addr{}, "", "", "", nil
	}
	i := slices.IndexFunc(pools, func(p v1.AddressPool) bool { return p.Name == f.Spec.AddressPool })
	if i < 0 {
		return netip.Addr{}, "", v1.ReasonPoolNotFound, fmt.Sprintf("address pool %q does not exist", f.Spec.AddressPool), nil
	}
	p, err := r.LB.poolLocked(ctx, &pools[i])
	if err != nil {
		return netip.Addr{}, "", "", "", err
	}
	if p.err != nil {
		return netip.Addr{}, "", v1.ReasonAddressNotAvailable, fmt.Sprintf("address pool %s is unusable: %v", f.Spec.AddressPool, p.err), nil
	}
	addr, err := p.alloc.Allocate(who, netip.Addr{})
	if errors.Is(err, ipam.ErrExhausted) {
		return netip.Addr{}, "", v1.ReasonPoolExhausted, fmt.Sprintf("address pool %s has no free address", f.Spec.AddressPool), nil
	}
	return addr, f.Spec.AddressPool, "", "", err
}

// releaseEverywhere frees what the owner holds in every pool but keep.
func (r *FleetAddressReconciler) releaseEverywhere(ctx context.Context, who, keep string) {
	r.LB.mu.Lock()
	var names []string
	for name, p := range r.LB.pools {
		if name == keep || p.alloc == nil {
			continue
		}
		if _, ok := p.alloc.Lookup(who); ok {
			names = append(names, name)
		}
	}
	r.LB.mu.Unlock()
	for _, n := range names {
		r.LB.release(ctx, n, who)
	}
}
