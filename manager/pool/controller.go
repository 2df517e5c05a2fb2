// Package pool reports each AddressPool's use: how many of its addresses are
// held by LoadBalancers, Routes and ProxyFleets (read from their status, where
// admission records allocations) and how many are left, and whether the
// pool's ranges are usable (valid, not overlapping each other or an older
// pool: the younger of two overlapping pools hands out no new address).
package pool

import (
	"context"
	"fmt"
	"math"
	"math/big"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/manager/ipam"
)

// ReasonOverlap: the pool's ranges overlap another AddressPool's.
const ReasonOverlap = "OverlappingPools"

// Reconciler writes AddressPool status.
type Reconciler struct {
	Client   client.Client
	Recorder recorder.EventRecorder
	// CountDelay coalesces the counts: a burst of allocations is counted once
	// per pool per CountDelay, not once per object (DefaultCountDelay when 0).
	CountDelay time.Duration
}

// DefaultCountDelay is Reconciler.CountDelay when unset.
const DefaultCountDelay = time.Second

// SetupWithManager registers the controller.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.CountDelay <= 0 {
		r.CountDelay = DefaultCountDelay
	}
	all := handler.EnqueueRequestsFromMapFunc(r.allPools)
	// Every pool, after CountDelay: the queue keeps one entry per pool, so
	// the allocations of a burst are counted together.
	allLater := handler.Funcs{
		CreateFunc: func(ctx context.Context, _ event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.countLater(ctx, q)
		},
		UpdateFunc: func(ctx context.Context, _ event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.countLater(ctx, q)
		},
		DeleteFunc: func(ctx context.Context, _ event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.countLater(ctx, q)
		},
	}
	// Only a change of the addresses an object holds can change a count.
	addressesChanged := builder.WithPredicates(predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool { return len(addresses(e.Object)) > 0 },
		UpdateFunc: func(e event.UpdateEvent) bool {
			return !slices.Equal(addresses(e.ObjectOld), addresses(e.ObjectNew))
		},
		DeleteFunc:  func(e event.DeleteEvent) bool { return len(addresses(e.Object)) > 0 },
		GenericFunc: func(event.GenericEvent) bool { return false },
	})
	return ctrl.NewControllerManagedBy(mgr).
		// Our own status writes and the quarantine annotation are no news.
		For(&v1.AddressPool{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// Another pool's ranges decide this one's overlap condition.
		Watches(&v1.AddressPool{}, all, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&v1.LoadBalancer{}, allLater, addressesChanged).
		Watches(&v1.Route{}, allLater, addressesChanged).
		Watches(&v1.ProxyFleet{}, allLater, addressesChanged).
		Named("addresspool").
		Complete(r)
}

func (r *Reconciler) countLater(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	for _, req := range r.allPools(ctx, nil) {
		q.AddAfter(req, r.CountDelay)
	}
}

func addresses(o client.Object) []v1.Address {
	switch x := o.(type) {
	case *v1.LoadBalancer:
		return x.Status.Addresses
	case *v1.Route:
		return x.Status.Addresses
	case *v1.ProxyFleet:
		return x.Status.Addresses
	}
	return nil
}

func (r *Reconciler) allPools(ctx context.Context, _ client.Object) []reconcile.Request {
	var list v1.AddressPoolList
	if err := r.Client.List(ctx, &list); err != nil {
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: list.Items[i].Name}})
	}
	return reqs
}

// Parse reads an AddressPool's ranges (invalid or overlapping each other: an error).
func Parse(ap *v1.AddressPool) (*ipam.Pool, error) {
	specs := make([]string, len(ap.Spec.Addresses))
	for i, a := range ap.Spec.Addresses {
		specs[i] = string(a)
	}
	return ipam.ParsePool(specs)
}

// older reports whether a was created before b (the name breaks ties).
func older(a, b *v1.AddressPool) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Name < b.Name
}

// OverlapsOlder says how ap's ranges overlap those of older pools (with valid
// ranges of their own), sorted; empty when they do not. A pool that overlaps
// an older one hands out no new address: the pool that was there first keeps
// working, the newcomer is refused.
func OverlapsOlder(ap *v1.AddressPool, mine *ipam.Pool, all []v1.AddressPool) []string {
	var clashes []string
	for i := range all {
		other := &all[i]
		if other.Name == ap.Name || !older(other, ap) {
			continue
		}
		theirs, err := Parse(other)
		if err != nil {
			continue // reported on that pool
		}
		if x, y, ok := mine.Overlaps(theirs); ok {
			clashes = append(clashes, fmt.Sprintf("%s overlaps %s of the older pool %s", x, y, other.Name))
		}
	}
	slices.Sort(clashes)
	return clashes
}

// Reconcile implements reconcile.Reconciler.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var ap v1.AddressPool
	if err := r.Client.Get(ctx, req.NamespacedName, &ap); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	status := ap.Status.DeepCopy()
	status.ObservedGeneration = ap.Generation

	p, err := Parse(&ap)
	if err != nil {
		status.Allocated, status.Available = 0, 0
		r.notReady(&ap, status, v1.ReasonInvalidSpec, fmt.Sprintf("unusable ranges: %v", err))
		return ctrl.Result{}, r.writeStatus(ctx, &ap, status)
	}

	allocated, err := r.count(ctx, p)
	if err != nil {
		return ctrl.Result{}, err
	}
	free := p.Size()
	free.Sub(free, big.NewInt(allocated))
	status.Allocated = allocated
	status.Available = math.MaxInt64
	if free.IsInt64() {
		status.Available = max(free.Int64(), 0)
	}

	var pools v1.AddressPoolList
	if err := r.Client.List(ctx, &pools); err != nil {
		return ctrl.Result{}, err
	}
	if clashes := OverlapsOlder(&ap, p, pools.Items); len(clashes) > 0 {
		r.notReady(&ap, status, ReasonOverlap, strings.Join(clashes, "; ")+"; this pool hands out no new address until the overlap is removed")
	} else {
		meta.SetStatusCondition(&status.Conditions, metav1.Condition{
			Type: v1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1.ReasonReady, ObservedGeneration: ap.Generation,
			Message: fmt.Sprintf("%d addresses allocated, %d available", status.Allocated, status.Available),
		})
	}
	return ctrl.Result{}, r.writeStatus(ctx, &ap, status)
}

// count is the number of distinct addresses inside ranges that some
// LoadBalancer, Route or ProxyFleet holds (Routes share their fleet's VIP:
// an address counts once however many objects are served on it).
func (r *Reconciler) count(ctx context.Context, p *ipam.Pool) (int64, error) {
	held := map[netip.Addr]struct{}{}
	add := func(addrs []v1.Address) {
		for _, a := range addrs {
			ip, err := netip.ParseAddr(string(a.IP))
			if err != nil {
				continue
			}
			if ip = ip.Unmap(); p.Contains(ip) {
				held[ip] = struct{}{}
			}
		}
	}
	// The cache's objects are only read here: no copies.
	var lbs v1.LoadBalancerList
	if err := r.Client.List(ctx, &lbs, client.UnsafeDisableDeepCopy); err != nil {
		return 0, err
	}
	for i := range lbs.Items {
		add(lbs.Items[i].Status.Addresses)
	}
	var routes v1.RouteList
	if err := r.Client.List(ctx, &routes, client.UnsafeDisableDeepCopy); err != nil {
		return 0, err
	}
	for i := range routes.Items {
		add(routes.Items[i].Status.Addresses)
	}
	var fleets v1.ProxyFleetList
	if err := r.Client.List(ctx, &fleets, client.UnsafeDisableDeepCopy); err != nil {
		return 0, err
	}
	for i := range fleets.Items {
		add(fleets.Items[i].Status.Addresses)
	}
	return int64(len(held)), nil
}

// notReady sets Ready=False and emits a warning when the reason or message changes.
func (r *Reconciler) notReady(ap *v1.AddressPool, status *v1.AddressPoolStatus, reason, msg string) {
	if prev := meta.FindStatusCondition(status.Conditions, v1.ConditionReady); prev == nil || prev.Reason != reason || prev.Message != msg {
		r.Recorder.Eventf(ap, nil, corev1.EventTypeWarning, reason, "Validate", "%s", msg)
	}
	meta.SetStatusCondition(&status.Conditions, metav1.Condition{
		Type: v1.ConditionReady, Status: metav1.ConditionFalse, Reason: reason, Message: msg, ObservedGeneration: ap.Generation,
	})
}

// writeStatus patches status only when it changed.
func (r *Reconciler) writeStatus(ctx context.Context, ap *v1.AddressPool, status *v1.AddressPoolStatus) error {
	if equality.Semantic.DeepEqual(&ap.Status, status) {
		return nil
	}
	patch := client.MergeFrom(ap.DeepCopy())
	ap.Status = *status
	return r.Client.Status().Patch(ctx, ap, patch)
}
