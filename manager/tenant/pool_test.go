package tenant

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// ensurePool creates an AddressPool unless it exists.
func ensurePool(t *testing.T, name string) {
	t.Helper()
	p := &v1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.AddressPoolSpec{Addresses: []v1.AddressRange{"192.0.2.0/28"}}}
	if err := env.Client.Create(context.Background(), p); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// TestTenantWithoutPoolIsNotReady: a Tenant naming an AddressPool that does
// not exist is onboarded (namespace, kubeconfig) but not Ready, with
// PoolNotFound and a warning event; creating the pool makes it Ready.
func TestTenantWithoutPoolIsNotReady(t *testing.T) {
	startController(t)
	ctx := context.Background()
	name, pool := uniq("nopool"), uniq("late-pool")
	tn := newTenant(name)
	tn.Spec.AddressPool = pool
	if err := env.Client.Create(ctx, tn); err != nil {
		t.Fatal(err)
	}
	tenantClient(t, name) // onboarding itself goes on
	eventually(t, "Ready=False PoolNotFound", func() error {
		var got v1.Tenant
		if err := env.Client.Get(ctx, types.NamespacedName{Name: name}, &got); err != nil {
			return err
		}
		c := meta.FindStatusCondition(got.Status.Conditions, v1.ConditionReady)
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != v1.ReasonPoolNotFound || c.ObservedGeneration != got.Generation {
			return fmt.Errorf("Ready %+v", c)
		}
		return nil
	})
	eventually(t, "a PoolNotFound event on the Tenant", func() error {
		var evs corev1.EventList
		if err := env.Client.List(ctx, &evs, client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("involvedObject.name", name)}); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == v1.ReasonPoolNotFound && e.Type == corev1.EventTypeWarning {
				return nil
			}
		}
		return fmt.Errorf("events %+v", evs.Items)
	})

	ensurePool(t, pool)
	eventually(t, "Ready once the pool exists", func() error {
		var got v1.Tenant
		if err := env.Client.Get(ctx, types.NamespacedName{Name: name}, &got); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(got.Status.Conditions, v1.ConditionReady) {
			return fmt.Errorf("conditions %+v", got.Status.Conditions)
		}
		return nil
	})
}
