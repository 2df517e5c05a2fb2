package route

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/testenv"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// wantOutcome is what the rules of the package comment give for one Route
// when every Route and claim record is looked at together, one Route at a
// time: the reference the concurrent admission must end up at.
type wantOutcome struct {
	accepted metav1.ConditionStatus
	reason   string
	hosts    []v1.Hostname
}

// sequentialOutcomes applies the limits (oldest Route first per tenant) and
// hostname ownership (oldest claim per group, claim records included) to the
// Routes and Tenants as they are now. Every hostname is exact and allowed,
// and configuration bytes stay under the default limit.
func sequentialOutcomes(tenants []v1.Tenant, routes []v1.Route) map[client.ObjectKey]wantOutcome {
	byNS := map[string][]*v1.Route{}
	for i := range routes {
		byNS[routes[i].Namespace] = append(byNS[routes[i].Namespace], &routes[i])
	}
	type claim struct {
		group string
		at    metav1.Time
	}
	out := map[client.ObjectKey]wantOutcome{}
	overHosts := map[client.ObjectKey]map[v1.Hostname]bool{}
	ages := map[v1.Hostname]map[string]metav1.Time{} // hostname → group → age
	older := func(h v1.Hostname, g string, at metav1.Time) {
		if ages[h] == nil {
			ages[h] = map[string]metav1.Time{}
		}
		if cur, ok := ages[h][g]; !ok || at.Before(&cur) {
			ages[h][g] = at
		}
	}
	groupOf := map[string]string{}
	for ti := range tenants {
		t := &tenants[ti]
		g := tenant.GroupKey(t)
		ns := tenant.Namespace(t.Name)
		groupOf[ns] = g
		items := byNS[ns]
		slices.SortFunc(items, Older)
		claimed := map[v1.Hostname]bool{}
		for i, rt := range items {
			k := client.ObjectKeyFromObject(rt)
			if i >= t.Spec.Limits.Routes() {
				out[k] = wantOutcome{metav1.ConditionFalse, v1.ReasonLimitExceeded, nil}
				continue
			}
			var fresh []v1.Hostname
			for _, h := range rt.Spec.Hostnames {
				if claimed[h] || slices.Contains(fresh, h) {
					continue
				}
				if len(claimed)+len(fresh) >= t.Spec.Limits.Hostnames() {
					if overHosts[k] == nil {
						overHosts[k] = map[v1.Hostname]bool{}
					}
					overHosts[k][h] = true
					continue
				}
				fresh = append(fresh, h)
			}
			for _, h := range rt.Spec.Hostnames {
				if !overHosts[k][h] {
					claimed[h] = true
					older(h, g, rt.CreationTimestamp)
				}
			}
		}
		for _, rec := range t.Status.HostnameClaims {
			older(v1.Hostname(rec.Hostname), g, rec.Since) // the default grace keeps every record live here
		}
	}
	winner := map[v1.Hostname]string{}
	for h, byGroup := range ages {
		var cs []claim
		for g, at := range byGroup {
			cs = append(cs, claim{g, at})
		}
		slices.SortFunc(cs, func(a, b claim) int { return cmp.Or(a.at.Compare(b.at.Time), cmp.Compare(a.group, b.group)) })
		winner[h] = cs[0].group
	}
	for i := range routes {
		rt := &routes[i]
		k := client.ObjectKeyFromObject(rt)
		if _, refused := out[k]; refused {
			continue
		}
		var accepted []v1.Hostname
		var issues []string
		for _, h := range rt.Spec.Hostnames {
			switch {
			case slices.Contains(accepted, h):
			case overHosts[k][h]:
				issues = append(issues, v1.ReasonLimitExceeded)
			case winner[h] != groupOf[rt.Namespace]:
				issues = append(issues, v1.ReasonHostnameConflict)
			default:
				accepted = append(accepted, h)
			}
		}
		switch {
		case len(accepted) == 0:
			out[k] = wantOutcome{metav1.ConditionFalse, issues[0], nil}
		case len(issues) > 0:
			out[k] = wantOutcome{metav1.ConditionTrue, issues[0], accepted}
		default:
			out[k] = wantOutcome{metav1.ConditionTrue, v1.ReasonAccepted, accepted}
		}
	}
	return out
}

// expectSequentialOutcomes waits until every Route of the tenants has the
// status the sequential rules give for the current objects.
func expectSequentialOutcomes(t *testing.T, what string, tenantNames []string) {
	t.Helper()
	ctx := context.Background()
	testenv.Eventually(t, what, func() error {
		var tenants []v1.Tenant
		var routes []v1.Route
		for _, name := range tenantNames {
			var tn v1.Tenant
			if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, &tn); err != nil {
				return err
			}
			tenants = append(tenants, tn)
			var list v1.RouteList
			if err := env.Client.List(ctx, &list, client.InNamespace(tenant.Namespace(name))); err != nil {
				return err
			}
			routes = append(routes, list.Items...)
		}
		want := sequentialOutcomes(tenants, routes)
		var wrong []string
		for i := range routes {
			rt := &routes[i]
			w := want[client.ObjectKeyFromObject(rt)]
			c := meta.FindStatusCondition(rt.Status.Conditions, v1.ConditionAccepted)
			if rt.Status.ObservedGeneration != rt.Generation || c == nil || c.ObservedGeneration != rt.Generation ||
				c.Status != w.accepted || c.Reason != w.reason || !slices.Equal(rt.Status.AcceptedHostnames, w.hosts) {
				got := "no Accepted condition"
				if c != nil {
					got = fmt.Sprintf("%s %s %v", c.Status, c.Reason, rt.Status.AcceptedHostnames)
				}
				wrong = append(wrong, fmt.Sprintf("%s: %s, want %s %s %v", client.ObjectKeyFromObject(rt), got, w.accepted, w.reason, w.hosts))
			}
		}
		if len(wrong) > 0 {
			return fmt.Errorf("%d of %d Routes differ from the sequential outcome, e.g. %v", len(wrong), len(routes), wrong[:min(3, len(wrong))])
		}
		return nil
	})
}

// Many Routes of several tenants (two of them one group) created, changed
// and deleted at once, admitted by several workers: the outcome is the one
// of deciding them one by one — the oldest Routes within each tenant's
// limits, each hostname held by the group with the oldest claim.
func TestConcurrentAdmissionMatchesSequentialRules(t *testing.T) {
	mgr := env.NewManager(t)
	r := &Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("route"), Workers: 8}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, mgr)
	ctx := context.Background()
	fleet, _, u := fixture(t)
	dom := "c-" + u + ".example.com"
	limits := v1.TenantLimits{MaxRoutes: ptr.To[int32](14), MaxHostnames: ptr.To[int32](9)}
	var names []string
	for i, group := range []string{"", "", "team-" + u, "team-" + u} {
		name := fmt.Sprintf("tc%d-%s", i, u)
		mkTenant(t, name, fleet, group, limits, v1.Hostname("*."+dom))
		names = append(names, name)
	}
	// 4 tenants × 20 Routes, each with 1–3 of 12 shared hostnames, created
	// by 16 clients at once: many share a creation second.
	rng := rand.New(rand.NewPCG(1, 11))
	var routes []*v1.Route
	for ti, name := range names {
		for i := range 20 {
			var hs []v1.Hostname
			for range 1 + rng.IntN(3) {
				if h := v1.Hostname(fmt.Sprintf("h%d.%s", rng.IntN(12), dom)); !slices.Contains(hs, h) {
					hs = append(hs, h)
				}
			}
			routes = append(routes, &v1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: tenant.Namespace(name), Name: fmt.Sprintf("r%02d", i)},
				Spec: v1.RouteSpec{
					Source:    v1.RouteSource{Kind: v1.SourceIngress, Cluster: "c", Namespace: "default", Name: fmt.Sprintf("r%d-%d", ti, i), UID: fmt.Sprintf("u-%d-%d", ti, i)},
					Hostnames: hs,
					Rules:     []v1.RouteRule{{Backends: []v1.RouteBackend{backend(30080)}}},
				}})
		}
	}
	rng.Shuffle(len(routes), func(i, j int) { routes[i], routes[j] = routes[j], routes[i] })
	inParallel := func(f func(*v1.Route) error, items []*v1.Route) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, len(items))
		work := make(chan *v1.Route)
		for range 16 {
			wg.Go(func() {
				for rt := range work {
					if err := f(rt); err != nil {
						errs <- err
					}
				}
			})
		}
		for _, rt := range items {
			work <- rt
		}
		close(work)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	inParallel(func(rt *v1.Route) error { return env.Client.Create(ctx, rt) }, routes)
	expectSequentialOutcomes(t, "outcome after the creates", names)

	// A third deleted, a third given other hostnames, all at once: room
	// under the limits and hostnames move to other Routes and tenants.
	var deleted, changed []*v1.Route
	for i, rt := range routes {
		switch i % 3 {
		case 0:
			deleted = append(deleted, rt)
		case 1:
			changed = append(changed, rt)
		}
	}
	inParallel(func(rt *v1.Route) error { return env.Client.Delete(ctx, rt) }, deleted)
	inParallel(func(rt *v1.Route) error {
		var cur v1.Route
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(rt), &cur); err != nil {
			return err
		}
		patch := client.MergeFrom(cur.DeepCopy())
		// A new hostname first (one per name: shared across tenants), then one it had.
		cur.Spec.Hostnames = []v1.Hostname{v1.Hostname(fmt.Sprintf("n-%s.%s", cur.Name, dom)), cur.Spec.Hostnames[0]}
		return env.Client.Patch(ctx, &cur, patch)
	}, changed)
	expectSequentialOutcomes(t, "outcome after the deletes and changes", names)
}
