package tenant

import (
	"context"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// countAdmission counts the tenant's LoadBalancers and Routes by their
// Accepted condition (admitted: True, refused: False; not yet decided: neither),
// for kubectl get tenants.
func (r *Reconciler) countAdmission(ctx context.Context, ns string, status *v1.TenantStatus) error {
	var lbs v1.LoadBalancerList
	if err := r.Client.List(ctx, &lbs, client.InNamespace(ns)); err != nil {
		return err
	}
	var routes v1.RouteList
	if err := r.Client.List(ctx, &routes, client.InNamespace(ns)); err != nil {
		return err
	}
	var admitted, refused int32
	tally := func(conds []metav1.Condition) {
		switch c := meta.FindStatusCondition(conds, v1.ConditionAccepted); {
		case c == nil:
		case c.Status == metav1.ConditionTrue:
			admitted++
		case c.Status == metav1.ConditionFalse:
			refused++
		}
	}
	for i := range lbs.Items {
		tally(lbs.Items[i].Status.Conditions)
	}
	for i := range routes.Items {
		tally(routes.Items[i].Status.Conditions)
	}
	status.Admitted, status.Refused = admitted, refused
	return nil
}
