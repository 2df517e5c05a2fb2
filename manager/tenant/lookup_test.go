package tenant

import (
	"context"
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/testenv"
)

// Several controllers of one manager register the name index; each finds
// the Tenant by name, and nothing for a name no Tenant has.
func TestLookupByNameIndex(t *testing.T) {
	mgr := env.NewManager(t)
	ctx := context.Background()
	for range 2 {
		if err := IndexByName(ctx, mgr.GetFieldIndexer()); err != nil {
			t.Fatalf("registering the index again: %v", err)
		}
	}
	testenv.Run(t, mgr)
	if err := env.Client.Create(ctx, &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "lookup-a"}, Spec: v1.TenantSpec{AddressPool: "p"}}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "lookup-a found", func() error {
		tn, err := Lookup(ctx, mgr.GetClient(), "lookup-a")
		if err != nil || tn == nil || tn.Name != "lookup-a" {
			return fmt.Errorf("got %v, %v", tn, err)
		}
		return nil
	})
	if tn, err := Lookup(ctx, mgr.GetClient(), "lookup-none"); err != nil || tn != nil {
		t.Fatalf("a name no Tenant has: %v, %v", tn, err)
	}
}
