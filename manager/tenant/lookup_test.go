package tenant

import (
	"context"
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/testenv"
)

// Lookup finds a Tenant by name in the cache without a deep copy (two
// lookups share its slices), and nothing for a name no Tenant has.
func TestLookupSharesTheCachedTenant(t *testing.T) {
	mgr := env.NewManager(t)
	ctx := context.Background()
	if _, err := mgr.GetCache().GetInformer(ctx, &v1.Tenant{}); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, mgr)
	if err := env.Client.Create(ctx, &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "lookup-a"},
		Spec: v1.TenantSpec{AddressPool: "p", Hostnames: []v1.Hostname{"*.a.example.com"}}}); err != nil {
		t.Fatal(err)
	}
	var first *v1.Tenant
	testenv.Eventually(t, "lookup-a found", func() error {
		tn, err := Lookup(ctx, mgr.GetClient(), "lookup-a")
		if err != nil || tn == nil || tn.Name != "lookup-a" || len(tn.Spec.Hostnames) != 1 {
			return fmt.Errorf("got %v, %v", tn, err)
		}
		first = tn
		return nil
	})
	again, err := Lookup(ctx, mgr.GetClient(), "lookup-a")
	if err != nil || again == nil {
		t.Fatalf("second lookup: %v, %v", again, err)
	}
	if &again.Spec.Hostnames[0] != &first.Spec.Hostnames[0] {
		t.Error("each lookup deep-copied the Tenant (its hostnames are not the cache's)")
	}
	if tn, err := Lookup(ctx, mgr.GetClient(), "lookup-none"); err != nil || tn != nil {
		t.Fatalf("a name no Tenant has: %v, %v", tn, err)
	}
}
