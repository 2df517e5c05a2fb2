package admission

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/manager/ipam"
	"github.com/fleetlb/fleetlb/manager/pool"
)

// fleetOwner names a ProxyFleet as an address holder; no LoadBalancer owner
// ("namespace/name") can look like it.
func fleetOwner(name string) string { return "proxyfleet:" + name }

// FleetAddressReconciler gives each ProxyFleet its shared HTTP/HTTPS VIP in
// status.addresses: spec.vip when set (reserved wherever it lies, so no
// pool hands it to a LoadBalancer), else one allocated from spec.addressPool. It shares
// the LoadBalancer allocator, so one address never has two owners, and a VIP
// it gives up waits the same quarantine.
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
		Watches(&v1.AddressPool{}, handler.EnqueueRequestsFromMapFunc(r.allFleets), builder.WithPredicates(predicate.GenerationChangedPredicate{})).
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
		return ctrl.Result{}, r.LB.forget(ctx, who)
	}
	var pools v1.AddressPoolList
	if err := r.LB.Client.List(ctx, &pools); err != nil {
		return ctrl.Result{}, err
	}
	addr, reason, msg, err := r.allocate(ctx, &f, pools.Items)
	if err != nil {
		return ctrl.Result{}, err
	}
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

// allocate returns the fleet's address, or the reason it has none. An address
// it held before and no longer uses goes into quarantine.
func (r *FleetAddressReconciler) allocate(ctx context.Context, f *v1.ProxyFleet, pools []v1.AddressPool) (netip.Addr, string, string, error) {
	who, group := fleetOwner(f.Name), fleetGroup(f.Name)
	lb := r.LB
	lb.mu.Lock()
	if err := lb.spaceLocked(ctx); err != nil {
		lb.mu.Unlock()
		return netip.Addr{}, "", "", err
	}
	now := lb.now()
	addr, reason, msg, err := func() (netip.Addr, string, string, error) {
		if f.Spec.VIP != "" {
			vip, err := netip.ParseAddr(string(f.Spec.VIP))
			if err != nil {
				return netip.Addr{}, v1.ReasonAddressNotAvailable, fmt.Sprintf("spec.vip %q is not an IP address", f.Spec.VIP), nil
			}
			// The admin's choice: reserved wherever it lies (inside a pool or
			// not), so no pool hands it to a LoadBalancer.
			if cur, ok := lb.space.Lookup(who); ok && cur != vip.Unmap() {
				if owner, _, taken := lb.space.Owner(vip); taken && owner != who {
					return netip.Addr{}, v1.ReasonAddressInUse, fmt.Sprintf("spec.vip %s is already allocated to %s", vip, owner), nil
				}
				lb.space.Release(who, now)
			}
			var inUse *ipam.InUseError
			if err := lb.space.Reserve(who, group, vip); errors.As(err, &inUse) {
				return netip.Addr{}, v1.ReasonAddressInUse, fmt.Sprintf("spec.vip %s is already allocated to %s", vip, inUse.Owner), nil
			} else if err != nil {
				return netip.Addr{}, "", "", err
			}
			return vip.Unmap(), "", "", nil
		}
		if f.Spec.AddressPool == "" {
			lb.space.Release(who, now)
			return netip.Addr{}, "", "", nil
		}
		i := slices.IndexFunc(pools, func(p v1.AddressPool) bool { return p.Name == f.Spec.AddressPool })
		if i < 0 {
			return netip.Addr{}, v1.ReasonPoolNotFound, fmt.Sprintf("address pool %q does not exist", f.Spec.AddressPool), nil
		}
		p, err := lb.poolLocked(ctx, &pools[i])
		if err != nil {
			return netip.Addr{}, "", "", err
		}
		if p.err != nil {
			return netip.Addr{}, v1.ReasonAddressNotAvailable, fmt.Sprintf("address pool %s is unusable: %v", f.Spec.AddressPool, p.err), nil
		}
		if cur, ok := lb.space.Lookup(who); !ok || !p.ranges.Allocatable(cur) {
			if clashes := pool.OverlapsOlder(&pools[i], p.ranges, pools); len(clashes) > 0 {
				return netip.Addr{}, v1.ReasonAddressNotAvailable, fmt.Sprintf("address pool %s hands out no new address: %s", f.Spec.AddressPool, strings.Join(clashes, "; ")), nil
			}
		}
		addr, err := lb.space.Allocate(p.ranges, who, group, netip.Addr{}, now)
		if errors.Is(err, ipam.ErrExhausted) {
			return netip.Addr{}, v1.ReasonPoolExhausted, fmt.Sprintf("address pool %s has no free address", f.Spec.AddressPool), nil
		}
		return addr, "", "", err
	}()
	lb.mu.Unlock()
	if err != nil {
		return netip.Addr{}, "", "", err
	}
	// Whatever it held before and does not hold now is in quarantine: persist it.
	for _, a := range f.Status.Addresses {
		if old, perr := netip.ParseAddr(string(a.IP)); perr == nil && old != addr {
			if err := lb.released(ctx, old); err != nil {
				return netip.Addr{}, "", "", err
			}
		}
	}
	return addr, reason, msg, nil
}
