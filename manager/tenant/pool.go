package tenant

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// poolCondition is Ready=False with PoolNotFound while the Tenant's
// AddressPool does not exist (its LoadBalancers could get no address), else
// nil. Onboarding goes on meanwhile, so the Tenant is Ready as soon as the
// pool appears.
func (r *Reconciler) poolCondition(ctx context.Context, t *v1.Tenant) (*metav1.Condition, error) {
	err := r.Client.Get(ctx, client.ObjectKey{Name: t.Spec.AddressPool}, &v1.AddressPool{})
	if err == nil {
		return nil, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, err
	}
	c := &metav1.Condition{
		Type: v1.ConditionReady, Status: metav1.ConditionFalse, Reason: v1.ReasonPoolNotFound,
		Message:            fmt.Sprintf("AddressPool %q does not exist: this tenant's LoadBalancers get no address until it is created", t.Spec.AddressPool),
		ObservedGeneration: t.Generation,
	}
	if prev := meta.FindStatusCondition(t.Status.Conditions, v1.ConditionReady); prev == nil || prev.Reason != c.Reason || prev.Message != c.Message {
		r.Recorder.Eventf(t, nil, corev1.EventTypeWarning, c.Reason, "Onboard", "%s", c.Message)
	}
	return c, nil
}

// tenantsOfPool maps an AddressPool to the Tenants that name it, so a pool
// created or deleted changes their Ready condition.
func (r *Reconciler) tenantsOfPool(ctx context.Context, o client.Object) []reconcile.Request {
	var list v1.TenantList
	if err := r.Client.List(ctx, &list); err != nil {
		return nil
	}
	var reqs []reconcile.Request
	for i := range list.Items {
		if list.Items[i].Spec.AddressPool == o.GetName() {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: list.Items[i].Name}})
		}
	}
	return reqs
}
