// Package nodes reports on each tenant's TenantNodes which of its node
// addresses the fleet refuses to send traffic to, and why (see
// manager/backends): status.refused, the Accepted condition and a warning
// event when the refused set changes. The ccm shows it to the tenant.
package nodes

import (
	"context"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/manager/backends"
	"github.com/fleetlb/fleetlb/manager/route"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// maxNote is the longest note an event may carry (events.k8s.io/v1).
const maxNote = 1024

// Reconciler writes the status of TenantNodes objects.
type Reconciler struct {
	Client   client.Client
	Recorder recorder.EventRecorder
	// Deny is the static backend deny-list (nil means backends.DefaultDeny).
	Deny []netip.Prefix
}

// SetupWithManager registers the controller. A TenantNodes is re-checked when
// it, its Tenant, any AddressPool or any fleet's addresses change.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("tenantnodes-status").
		For(&v1.TenantNodes{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&v1.Tenant{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: tenant.Namespace(o.GetName()), Name: v1.TenantNodesName}}}
		})).
		Watches(&v1.AddressPool{}, handler.EnqueueRequestsFromMapFunc(r.all)).
		Watches(&v1.ProxyFleet{}, handler.EnqueueRequestsFromMapFunc(r.all), builder.WithPredicates(route.AddressesChanged)).
		Complete(r)
}

func (r *Reconciler) all(ctx context.Context, _ client.Object) []reconcile.Request {
	var list v1.TenantNodesList
	if err := r.Client.List(ctx, &list); err != nil {
		return nil
	}
	out := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return out
}

// Reconcile implements reconcile.Reconciler.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var tn v1.TenantNodes
	if err := r.Client.Get(ctx, req.NamespacedName, &tn); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	name, ok := tenant.Of(tn.Namespace)
	if !ok || !tn.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	var t v1.Tenant
	if err := r.Client.Get(ctx, types.NamespacedName{Name: name}, &t); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err) // no Tenant: nothing is served anyway
	}
	deny, err := backends.Load(ctx, r.Client, r.Deny)
	if err != nil {
		return ctrl.Result{}, err
	}
	allowed, refused := backends.Confine(&t, &tn, deny)
	served := 0
	for _, n := range allowed.Spec.Nodes {
		served += len(n.Addresses)
	}

	status := tn.Status.DeepCopy()
	status.ObservedGeneration = tn.Generation
	status.Nodes, status.Served, status.RefusedCount = int32(len(tn.Spec.Nodes)), int32(served), int32(len(refused))
	status.Refused = refused[:min(len(refused), v1.MaxRefusedListed)]
	cond := metav1.Condition{Type: v1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: v1.ReasonAccepted,
		Message: backends.Summary(refused, served), ObservedGeneration: tn.Generation}
	if len(refused) > 0 {
		cond.Status, cond.Reason = metav1.ConditionFalse, v1.ReasonNodesRefused
	}
	prev := meta.FindStatusCondition(tn.Status.Conditions, v1.ConditionAccepted)
	meta.SetStatusCondition(&status.Conditions, cond)
	if equality.Semantic.DeepEqual(&tn.Status, status) {
		return ctrl.Result{}, nil
	}
	// An event only when what is refused changed, not on every node change.
	changed := prev == nil || tn.Status.RefusedCount != status.RefusedCount || !equality.Semantic.DeepEqual(tn.Status.Refused, status.Refused)
	switch {
	case len(refused) > 0 && changed:
		r.Recorder.Eventf(&tn, nil, corev1.EventTypeWarning, v1.ReasonNodesRefused, "ConfineBackends", "%s", backends.Truncate(cond.Message, maxNote))
	case len(refused) == 0 && prev != nil && prev.Status == metav1.ConditionFalse:
		r.Recorder.Eventf(&tn, nil, corev1.EventTypeNormal, v1.ReasonAccepted, "ConfineBackends", "%s", backends.Truncate(cond.Message, maxNote))
	}
	patch := client.MergeFrom(tn.DeepCopy())
	tn.Status = *status
	return ctrl.Result{}, client.IgnoreNotFound(r.Client.Status().Patch(ctx, &tn, patch))
}
