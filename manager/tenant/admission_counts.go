package tenant

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// tally counts an object by its Accepted condition for kubectl get tenants:
// decided[1] admitted (True), decided[0] refused (False), neither when not
// yet decided.
func tally(decided *[2]int32, conds []metav1.Condition) {
	switch c := meta.FindStatusCondition(conds, v1.ConditionAccepted); {
	case c == nil:
	case c.Status == metav1.ConditionTrue:
		decided[1]++
	case c.Status == metav1.ConditionFalse:
		decided[0]++
	}
}

// acceptedOf is the status of an object's Accepted condition ("" when none).
func acceptedOf(o client.Object) metav1.ConditionStatus {
	var conds []metav1.Condition
	switch o := o.(type) {
	case *v1.LoadBalancer:
		conds = o.Status.Conditions
	case *v1.Route:
		conds = o.Status.Conditions
	}
	if c := meta.FindStatusCondition(conds, v1.ConditionAccepted); c != nil {
		return c.Status
	}
	return ""
}
