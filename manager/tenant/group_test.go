package tenant

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// No group can take the key of a tenant without one, whatever it is named.
func TestGroupKeyNeverCollidesWithATenant(t *testing.T) {
	alone := &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "b"}}
	for _, group := range []string{"b", "tenant-b", "tenant", "group-b"} {
		other := &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "c"}, Spec: v1.TenantSpec{Group: group}}
		if GroupKey(other) == GroupKey(alone) {
			t.Errorf("group %q shares the key %q of tenant b", group, GroupKey(alone))
		}
	}
	a1 := &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "a1"}, Spec: v1.TenantSpec{Group: "team"}}
	a2 := &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "a2"}, Spec: v1.TenantSpec{Group: "team"}}
	if GroupKey(a1) != GroupKey(a2) {
		t.Errorf("one group, two keys: %q %q", GroupKey(a1), GroupKey(a2))
	}
}
