package tenant

import (
	"context"
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// TestAdmittedAndRefusedCounts: Tenant status counts the LoadBalancers and
// Routes admitted and refused (kubectl get tenants shows them).
func TestAdmittedAndRefusedCounts(t *testing.T) {
	startController(t)
	ctx := context.Background()
	name := uniq("counts")
	if err := env.Client.Create(ctx, newTenant(name)); err != nil {
		t.Fatal(err)
	}
	tenantClient(t, name) // the namespace exists
	for i, accepted := range []metav1.ConditionStatus{metav1.ConditionTrue, metav1.ConditionFalse, metav1.ConditionFalse, ""} {
		o := lb(Namespace(name), fmt.Sprintf("lb-%d", i))
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
		if accepted == "" {
			continue // not decided yet
		}
		o.Status.Conditions = []metav1.Condition{{Type: v1.ConditionAccepted, Status: accepted, Reason: "Test", LastTransitionTime: metav1.Now()}}
		if err := env.Client.Status().Update(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "1 admitted, 2 refused of 4", func() error {
		var got v1.Tenant
		if err := env.Client.Get(ctx, types.NamespacedName{Name: name}, &got); err != nil {
			return err
		}
		if got.Status.LoadBalancers != 4 || got.Status.Admitted != 1 || got.Status.Refused != 2 {
			return fmt.Errorf("status lbs %d admitted %d refused %d", got.Status.LoadBalancers, got.Status.Admitted, got.Status.Refused)
		}
		return nil
	})
}
