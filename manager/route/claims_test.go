package route

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/testenv"
)

func TestOverlap(t *testing.T) {
	cases := []struct {
		a, b string
		want bool
	}{
		{"a.x.com", "a.x.com", true},
		{"*.x.com", "a.x.com", true},
		{"*.x.com", "b.a.x.com", true},
		{"*.x.com", "*.a.x.com", true},
		{"*.x.com", "*.x.com", true},
		{"*.x.com", "x.com", false},
		{"*.a.x.com", "a.x.com", false},
		{"*.x.com", "a.y.com", false},
		{"*.x.com", "ax.com", false},
		{"a.x.com", "b.x.com", false},
	}
	for _, c := range cases {
		if got := Overlap(v1.Hostname(c.a), v1.Hostname(c.b)); got != c.want {
			t.Errorf("Overlap(%s, %s) = %v, want %v", c.a, c.b, got, c.want)
		}
		if got := Overlap(v1.Hostname(c.b), v1.Hostname(c.a)); got != c.want {
			t.Errorf("Overlap(%s, %s) = %v, want %v", c.b, c.a, got, c.want)
		}
	}
}

func TestWantRecords(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	old := metav1.NewTime(t0)
	now := t0.Add(time.Hour)
	cur := []v1.HostnameClaim{
		{Hostname: "kept.x.com", Since: old},
		{Hostname: "dropped.x.com", Since: old},
		{Hostname: "expired.x.com", Since: old, Released: ptr.To(metav1.NewTime(now.Add(-time.Minute)))},
		{Hostname: "back.x.com", Since: old, Released: ptr.To(metav1.NewTime(now.Add(-time.Second)))},
	}
	claimed := map[v1.Hostname]metav1.Time{"kept.x.com": old, "back.x.com": metav1.NewTime(now), "new.x.com": metav1.NewTime(now)}
	got, next := wantRecords(cur, claimed, now, 30*time.Second)
	want := map[string]string{ // hostname → since/released
		"back.x.com":    "old/-", // claimed again within the grace: keeps its age
		"dropped.x.com": "old/now",
		"kept.x.com":    "old/-",
		"new.x.com":     "now/-",
	}
	if len(got) != len(want) {
		t.Fatalf("records %+v, want %v", got, want)
	}
	for _, r := range got {
		since, rel := "old", "-"
		if r.Since.Time.Equal(now) {
			since = "now"
		}
		if r.Released != nil {
			rel = "?"
			if r.Released.Time.Equal(now) {
				rel = "now"
			}
		}
		if want[r.Hostname] != since+"/"+rel {
			t.Errorf("%s: %s/%s, want %s", r.Hostname, since, rel, want[r.Hostname])
		}
	}
	if !next.Equal(now.Add(30 * time.Second)) {
		t.Errorf("next expiry %v, want %v", next, now.Add(30*time.Second))
	}
}

func conflictMessage(t *testing.T, rt *v1.Route, others ...string) {
	t.Helper()
	c := meta.FindStatusCondition(rt.Status.Conditions, v1.ConditionAccepted)
	for _, o := range others {
		if strings.Contains(c.Message, o) {
			t.Errorf("message %q names %q of another tenant", c.Message, o)
		}
	}
}

// A wildcard held by one tenant blocks another's names under it, and an
// exact name held first blocks a later wildcard covering it.
func TestWildcardAndExactAcrossTenants(t *testing.T) {
	start(t)
	fleet, vip, u := fixture(t)
	dom := "w-" + u + ".example.com"
	nsA := mkTenant(t, "wa-"+u, fleet, "", v1.TenantLimits{}, v1.Hostname("*."+dom))
	nsB := mkTenant(t, "wb-"+u, fleet, "", v1.TenantLimits{}, v1.Hostname("*."+dom))

	// Wildcard first.
	wild := v1.Hostname("*.one." + dom)
	mkRoute(t, nsA, "rwild1", nil, wild)
	expect(t, nsA, "rwild1", "accepted", func(rt *v1.Route) error { return all(hosts(rt, wild), addr(rt, vip)) })
	time.Sleep(1100 * time.Millisecond) // creation timestamps have second resolution
	under := v1.Hostname("api.one." + dom)
	deeper := v1.Hostname("*.deep.one." + dom)
	mkRoute(t, nsB, "runder1", nil, under, deeper)
	rb := expect(t, nsB, "runder1", "blocked by the wildcard", func(rt *v1.Route) error {
		return all(cond(rt, v1.ConditionAccepted, metav1.ConditionFalse, v1.ReasonHostnameConflict), hosts(rt))
	})
	conflictMessage(t, rb, "wa-"+u, nsA, "rwild1", string(wild))
	warned(t, nsB, "runder1", v1.ReasonHostnameConflict)

	// Exact first: a later wildcard over it is refused, the exact name kept.
	exact := v1.Hostname("www.two." + dom)
	mkRoute(t, nsB, "rexact1", nil, exact)
	expect(t, nsB, "rexact1", "accepted", func(rt *v1.Route) error { return hosts(rt, exact) })
	time.Sleep(1100 * time.Millisecond)
	other := v1.Hostname("other." + dom)
	mkRoute(t, nsA, "rcover1", nil, v1.Hostname("*.two."+dom), other)
	ra := expect(t, nsA, "rcover1", "wildcard refused, the rest served", func(rt *v1.Route) error {
		return all(cond(rt, v1.ConditionAccepted, metav1.ConditionTrue, v1.ReasonHostnameConflict), hosts(rt, other))
	})
	conflictMessage(t, ra, "wb-"+u, nsB, "rexact1", string(exact))
	expect(t, nsB, "rexact1", "still accepted", func(rt *v1.Route) error { return hosts(rt, exact) })
}

// A claim keeps its age when its Route is deleted and re-created: nobody
// takes the name in between, and the re-created Route wins again.
func TestClaimAgeKeptAcrossRecreate(t *testing.T) {
	start(t) // the default grace (minutes) covers the test
	ctx := context.Background()
	fleet, vip, u := fixture(t)
	dom := "r-" + u + ".example.com"
	h := v1.Hostname("shop." + dom)
	nameA := "ra-" + u
	nsA := mkTenant(t, nameA, fleet, "", v1.TenantLimits{}, v1.Hostname("*."+dom))
	nsB := mkTenant(t, "rb-"+u, fleet, "", v1.TenantLimits{}, v1.Hostname("*."+dom))

	orig := mkRoute(t, nsA, "shop", nil, h)
	expect(t, nsA, "shop", "accepted", func(rt *v1.Route) error { return all(hosts(rt, h), addr(rt, vip)) })
	var since metav1.Time
	testenv.Eventually(t, "claim recorded", func() error {
		var tn v1.Tenant
		if err := env.Client.Get(ctx, client.ObjectKey{Name: nameA}, &tn); err != nil {
			return err
		}
		for _, c := range tn.Status.HostnameClaims {
			if c.Hostname == string(h) && c.Released == nil {
				since = c.Since
				return nil
			}
		}
		return fmt.Errorf("no claim of %s in %+v", h, tn.Status.HostnameClaims)
	})
	time.Sleep(1100 * time.Millisecond)
	mkRoute(t, nsB, "squat", nil, h)
	expect(t, nsB, "squat", "refused", func(rt *v1.Route) error {
		return cond(rt, v1.ConditionAccepted, metav1.ConditionFalse, v1.ReasonHostnameConflict)
	})

	// The ccm deletes the Route: the claim is released but holds.
	if err := env.Client.Delete(ctx, orig); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "claim released", func() error {
		var tn v1.Tenant
		if err := env.Client.Get(ctx, client.ObjectKey{Name: nameA}, &tn); err != nil {
			return err
		}
		for _, c := range tn.Status.HostnameClaims {
			if c.Hostname == string(h) && c.Released != nil {
				return nil
			}
		}
		return fmt.Errorf("claim of %s not released: %+v", h, tn.Status.HostnameClaims)
	})
	squat := expect(t, nsB, "squat", "still refused in the grace period", func(rt *v1.Route) error {
		return cond(rt, v1.ConditionAccepted, metav1.ConditionFalse, v1.ReasonHostnameConflict)
	})
	conflictMessage(t, squat, nameA, nsA)

	// Re-created (newer than the squatter's Route): it is older by its claim.
	time.Sleep(1100 * time.Millisecond)
	mkRoute(t, nsA, "shop-again", nil, h)
	expect(t, nsA, "shop-again", "accepted by the kept age", func(rt *v1.Route) error {
		return all(cond(rt, v1.ConditionAccepted, metav1.ConditionTrue, v1.ReasonAccepted), hosts(rt, h))
	})
	expect(t, nsB, "squat", "still refused", func(rt *v1.Route) error {
		return cond(rt, v1.ConditionAccepted, metav1.ConditionFalse, v1.ReasonHostnameConflict)
	})
	testenv.Eventually(t, "claim live again with its first age", func() error {
		var tn v1.Tenant
		if err := env.Client.Get(ctx, client.ObjectKey{Name: nameA}, &tn); err != nil {
			return err
		}
		for _, c := range tn.Status.HostnameClaims {
			if c.Hostname == string(h) && c.Released == nil && c.Since.Equal(&since) {
				return nil
			}
		}
		return fmt.Errorf("claim of %s: %+v, want since %v", h, tn.Status.HostnameClaims, since)
	})
}

// Limits apply with their defaults and say which limit refused what.
func TestHostnameAndConfigBytesLimits(t *testing.T) {
	start(t)
	ctx := context.Background()
	fleet, _, u := fixture(t)
	dom := "b-" + u + ".example.com"
	name := "tb-" + u
	ns := mkTenant(t, name, fleet, "", v1.TenantLimits{MaxHostnames: ptr.To[int32](2), MaxRouteConfigBytes: ptr.To[int32](4000)}, v1.Hostname("*."+dom))
	var tn v1.Tenant
	if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, &tn); err != nil {
		t.Fatal(err)
	}
	if ptr.Deref(tn.Spec.Limits.MaxRoutes, 0) != v1.DefaultMaxRoutes || ptr.Deref(tn.Spec.Limits.MaxNodes, 0) != v1.DefaultMaxNodes {
		t.Fatalf("limits not defaulted: %+v", tn.Spec.Limits)
	}
	a, b, c := v1.Hostname("a."+dom), v1.Hostname("b."+dom), v1.Hostname("c."+dom)
	mkRoute(t, ns, "first", nil, a, b)
	expect(t, ns, "first", "accepted", func(rt *v1.Route) error { return hosts(rt, a, b) })
	time.Sleep(1100 * time.Millisecond)
	mkRoute(t, ns, "second", nil, a, c)
	second := expect(t, ns, "second", "c over maxHostnames", func(rt *v1.Route) error {
		return all(cond(rt, v1.ConditionAccepted, metav1.ConditionTrue, v1.ReasonLimitExceeded), hosts(rt, a))
	})
	if msg := meta.FindStatusCondition(second.Status.Conditions, v1.ConditionAccepted).Message; !strings.Contains(msg, "maxHostnames=2") {
		t.Errorf("message %q does not name the limit", msg)
	}

	// A Route whose rules would take the tenant over its configuration bytes.
	big := func(rt *v1.Route) {
		var matches []v1.RouteMatch
		for i := 0; i < 16; i++ {
			matches = append(matches, v1.RouteMatch{Path: &v1.PathMatch{Type: v1.PathPrefix, Value: "/" + strings.Repeat("p", 200)}})
		}
		rt.Spec.Rules = []v1.RouteRule{{Matches: matches, Backends: []v1.RouteBackend{backend(30080)}}}
	}
	mkRoute(t, ns, "big", big, a)
	bigRt := expect(t, ns, "big", "over maxRouteConfigBytes", func(rt *v1.Route) error {
		return all(cond(rt, v1.ConditionAccepted, metav1.ConditionFalse, v1.ReasonLimitExceeded), hosts(rt))
	})
	if msg := meta.FindStatusCondition(bigRt.Status.Conditions, v1.ConditionAccepted).Message; !strings.Contains(msg, "maxRouteConfigBytes=4000") {
		t.Errorf("message %q does not name the limit", msg)
	}
	warned(t, ns, "big", v1.ReasonLimitExceeded)
}
