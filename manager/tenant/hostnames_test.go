package tenant

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// TestPublicSuffixPatternOnTheTenant: a Tenant whose spec.hostnames holds
// public suffix patterns gets HostnamesValid=False, PublicSuffix naming them
// (and not its good pattern), and a warning event, while it stays Ready;
// removing them makes HostnamesValid True.
func TestPublicSuffixPatternOnTheTenant(t *testing.T) {
	startController(t)
	ensurePool(t, "pool")
	ctx := context.Background()
	name := uniq("suffix")
	tn := newTenant(name)
	tn.Spec.Hostnames = []v1.Hostname{"*.team.example.com", "*.com", "co.uk", "*.github.io"}
	if err := env.Client.Create(ctx, tn); err != nil {
		t.Fatal(err)
	}
	get := func() (*v1.Tenant, error) {
		var got v1.Tenant
		return &got, env.Client.Get(ctx, types.NamespacedName{Name: name}, &got)
	}
	eventually(t, "HostnamesValid=False PublicSuffix, Ready", func() error {
		got, err := get()
		if err != nil {
			return err
		}
		c := meta.FindStatusCondition(got.Status.Conditions, v1.ConditionHostnamesValid)
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != v1.ReasonPublicSuffix || c.ObservedGeneration != got.Generation {
			return fmt.Errorf("HostnamesValid %+v", c)
		}
		for _, p := range []string{`"*.com"`, `"co.uk"`, `"*.github.io"`} {
			if !strings.Contains(c.Message, p) {
				return fmt.Errorf("message %q does not name %s", c.Message, p)
			}
		}
		if strings.Contains(c.Message, "team.example.com\"") {
			return fmt.Errorf("message %q names the good pattern", c.Message)
		}
		if !meta.IsStatusConditionTrue(got.Status.Conditions, v1.ConditionReady) {
			return fmt.Errorf("not Ready: %+v", got.Status.Conditions)
		}
		return nil
	})
	eventually(t, "a PublicSuffix warning event on the Tenant", func() error {
		var evs corev1.EventList
		if err := env.Client.List(ctx, &evs, client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("involvedObject.name", name)}); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == v1.ReasonPublicSuffix && e.Type == corev1.EventTypeWarning && strings.Contains(e.Message, `"*.com"`) {
				return nil
			}
		}
		return fmt.Errorf("events %+v", evs.Items)
	})

	got, err := get()
	if err != nil {
		t.Fatal(err)
	}
	got.Spec.Hostnames = []v1.Hostname{"*.team.example.com"}
	if err := env.Client.Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	eventually(t, "HostnamesValid=True once the patterns are gone", func() error {
		got, err := get()
		if err != nil {
			return err
		}
		c := meta.FindStatusCondition(got.Status.Conditions, v1.ConditionHostnamesValid)
		if c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != got.Generation {
			return fmt.Errorf("HostnamesValid %+v", c)
		}
		return nil
	})
}
