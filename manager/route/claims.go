package route

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// Hostname ownership across tenants.
//
// A claim is a tenant group's hold on one hostname (exact or wildcard). Two
// claims overlap when they are the same name, or one is a wildcard *.s and
// the other lies under s (a.s, b.a.s, *.a.s): the data plane would send the
// other's traffic to the wildcard's holder, or split a name between tenants.
// Among overlapping claims of different groups the oldest wins, exact or
// wildcard alike; a claim that lost does not block anyone. Claims are
// decided in age order (then by group and name), so the outcome does not
// depend on which Route is reconciled first.
//
// A claim's age is the earliest of: the creation of the oldest Route of the
// group that validly claims the name, and the Since of the group's claim
// records (Tenant status.hostnameClaims, written only by the manager). A
// record outlives its last Route by a grace period (Reconciler.ClaimGrace),
// during which it still blocks others and a Route that claims the name again
// gets its old age back: a ccm that deletes and re-creates its Route keeps
// its place, and no other tenant can take the name in between. Neither
// source is writable by a tenant, so no tenant can make its claim older.

// Field indexes for hostname ownership.
const (
	// IndexDomain indexes Routes by every domain at or above each hostname's
	// name without its wildcard (a.b.c gives a.b.c, b.c and c).
	IndexDomain = "fleetlb.io/route-domain"
	// IndexClaim indexes Tenants by each hostname in status.hostnameClaims.
	IndexClaim = "fleetlb.io/tenant-claim"
	// IndexClaimDomain indexes Tenants by the domains of their claimed hostnames.
	IndexClaimDomain = "fleetlb.io/tenant-claim-domain"
)

// DefaultClaimGrace is how long a claim outlives its last Route.
const DefaultClaimGrace = 10 * time.Minute

// baseName is a hostname without its wildcard label.
func baseName(h string) (string, bool) {
	if s, ok := strings.CutPrefix(h, "*."); ok {
		return s, true
	}
	return h, false
}

// domains are h's name and every domain above it.
func domains(h string) []string {
	name, _ := baseName(h)
	out := []string{name}
	for {
		_, rest, ok := strings.Cut(name, ".")
		if !ok || rest == "" {
			return out
		}
		out = append(out, rest)
		name = rest
	}
}

// under reports whether h is inside wildcard *.s: *.s itself, or a name
// (exact or wildcard) below s.
func under(s, h string) bool {
	name, _ := baseName(h)
	return h == "*."+s || strings.HasSuffix(name, "."+s)
}

// Overlap reports whether two hostname claims collide: equal, or one a
// wildcard the other lies under.
func Overlap(a, b v1.Hostname) bool {
	covers := func(w, h string) bool {
		s, ok := strings.CutPrefix(w, "*.")
		return ok && under(s, h)
	}
	return a == b || covers(string(a), string(b)) || covers(string(b), string(a))
}

func indexRouteDomains(o client.Object) []string {
	var out []string
	for _, h := range ClaimedHostnames(o.(*v1.Route)) {
		out = append(out, domains(string(h))...)
	}
	return dedupe(out)
}

func indexClaims(o client.Object) []string {
	var out []string
	for _, c := range o.(*v1.Tenant).Status.HostnameClaims {
		out = append(out, c.Hostname)
	}
	return out
}

func indexClaimDomains(o client.Object) []string {
	var out []string
	for _, c := range o.(*v1.Tenant).Status.HostnameClaims {
		out = append(out, domains(c.Hostname)...)
	}
	return dedupe(out)
}

func dedupe(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}

// budget is what a tenant's limits leave of its Routes: the oldest Routes
// first, up to maxRoutes; hostnames up to maxHostnames distinct names;
// route-configuration bytes up to maxRouteConfigBytes.
type budget struct {
	// refused: Routes refused whole (LimitExceeded), by name.
	refused map[string]refusal
	// hostRefused: hostnames over maxHostnames, by Route name.
	hostRefused map[string]map[v1.Hostname]refusal
	// claimed: the hostnames the tenant validly claims, with the creation
	// time of the oldest Route that does.
	claimed map[v1.Hostname]metav1.Time
}

// budgetOf is tenant t's budget: the one this reconcile already used, else
// the one kept between reconciles (c.kept), else made from the cache.
func (c *claims) budgetOf(ctx context.Context, t *v1.Tenant) (*budget, error) {
	if b, ok := c.budgets[t.Name]; ok {
		return b, nil
	}
	b, err := c.kept.get(t.Name, t.UID, t.Generation, func() (*budget, error) { return c.makeBudget(ctx, t) })
	if err != nil {
		return nil, err
	}
	if c.budgets == nil {
		c.budgets = map[string]*budget{}
	}
	c.budgets[t.Name] = b
	return b, nil
}

// makeBudget decides tenant t's limits over all its Routes, oldest first.
func (c *claims) makeBudget(ctx context.Context, t *v1.Tenant) (*budget, error) {
	var list v1.RouteList
	// Only read (the budget keeps names, hostnames and timestamps): no copies.
	if err := c.c.List(ctx, &list, client.InNamespace(tenant.Namespace(t.Name)), client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	items := make([]*v1.Route, 0, len(list.Items))
	for i := range list.Items {
		if list.Items[i].DeletionTimestamp.IsZero() {
			items = append(items, &list.Items[i])
		}
	}
	slices.SortFunc(items, Older)
	lim := &t.Spec.Limits
	b := &budget{refused: map[string]refusal{}, hostRefused: map[string]map[v1.Hostname]refusal{}, claimed: map[v1.Hostname]metav1.Time{}}
	used := 0
	for i, rt := range items {
		if i >= lim.Routes() {
			b.refused[rt.Name] = refusal{v1.ReasonLimitExceeded,
				fmt.Sprintf("over the tenant's limit maxRoutes=%d: the %d older Routes are admitted", lim.Routes(), lim.Routes())}
			continue
		}
		var hosts, fresh []v1.Hostname
		if OnGateways(rt) {
			// Served on the tenant's own Gateway VIP: counted, never claimed.
			used += ConfigBytes(t.Name, rt, gatewayHosts(rt))
			if used > lim.RouteConfigBytes() {
				used -= ConfigBytes(t.Name, rt, gatewayHosts(rt))
				b.refused[rt.Name] = refusal{v1.ReasonLimitExceeded,
					fmt.Sprintf("the Route's route configuration (about %d bytes) would take the tenant over its limit maxRouteConfigBytes=%d (older Routes use %d)",
						ConfigBytes(t.Name, rt, gatewayHosts(rt)), lim.RouteConfigBytes(), used)}
			}
			continue
		}
		for _, h := range rt.Spec.Hostnames {
			if slices.Contains(hosts, h) || !Allowed(t.Spec.Hostnames, h) {
				continue
			}
			if _, ok := b.claimed[h]; !ok && len(b.claimed)+len(fresh) >= lim.Hostnames() {
				if b.hostRefused[rt.Name] == nil {
					b.hostRefused[rt.Name] = map[v1.Hostname]refusal{}
				}
				b.hostRefused[rt.Name][h] = refusal{v1.ReasonLimitExceeded,
					fmt.Sprintf("hostname %s is over the tenant's limit maxHostnames=%d", h, lim.Hostnames())}
				continue
			}
			hosts = append(hosts, h)
			if _, ok := b.claimed[h]; !ok {
				fresh = append(fresh, h)
			}
		}
		size := c.sizes.configBytes(t.Name, rt, hosts)
		if used+size > lim.RouteConfigBytes() {
			b.refused[rt.Name] = refusal{v1.ReasonLimitExceeded,
				fmt.Sprintf("the Route's route configuration (about %d bytes) would take the tenant over its limit maxRouteConfigBytes=%d (older Routes use %d)",
					size, lim.RouteConfigBytes(), used)}
			delete(b.hostRefused, rt.Name)
			continue
		}
		used += size
		for _, h := range hosts {
			if _, ok := b.claimed[h]; !ok {
				b.claimed[h] = rt.CreationTimestamp
			}
		}
	}
	return b, nil
}

// claimKey is one group's claim on one hostname.
type claimKey struct {
	group string
	host  v1.Hostname
}

// recordLive reports whether a claim record still holds at now.
func recordLive(rec *v1.HostnameClaim, now time.Time, grace time.Duration) bool {
	return rec.Released == nil || now.Before(rec.Released.Add(grace))
}

// root is the domain whose wildcard is the topmost claimed one above h, or
// "" when no wildcard covers h and h is exact: then only claims of h itself
// overlap it. Every claim that overlaps one under *.root is under it too, so
// deciding the claims under it decides h.
func (c *claims) root(ctx context.Context, h v1.Hostname) (string, error) {
	name, wild := baseName(string(h))
	ds := domains(string(h))
	for i := len(ds) - 1; i >= 1; i-- { // shortest (topmost) domain first
		w := "*." + ds[i]
		// Only counted: no copies.
		var routes v1.RouteList
		if err := c.c.List(ctx, &routes, client.MatchingFields{IndexHostname: w}, client.UnsafeDisableDeepCopy); err != nil {
			return "", err
		}
		var tenants v1.TenantList
		if err := c.c.List(ctx, &tenants, client.MatchingFields{IndexClaim: w}, client.UnsafeDisableDeepCopy); err != nil {
			return "", err
		}
		if len(routes.Items) > 0 || len(tenants.Items) > 0 {
			return ds[i], nil
		}
	}
	if wild {
		return name, nil
	}
	return "", nil
}

// decide settles every claim under *.s (s == "": the claims of exact name h)
// oldest first and returns those that won.
func (c *claims) decide(ctx context.Context, s string, h v1.Hostname) (map[claimKey]bool, error) {
	key := "*." + s
	if s == "" {
		key = string(h)
	}
	if won, ok := c.decided[key]; ok {
		return won, nil
	}
	match := func(x string) bool { return under(s, x) }
	routeField, tenantField, value := IndexDomain, IndexClaimDomain, s
	if s == "" {
		match = func(x string) bool { return x == string(h) }
		routeField, tenantField, value = IndexHostname, IndexClaim, string(h)
	}
	// Both only read: no copies.
	var routes v1.RouteList
	if err := c.c.List(ctx, &routes, client.MatchingFields{routeField: value}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	var recorded v1.TenantList
	if err := c.c.List(ctx, &recorded, client.MatchingFields{tenantField: value}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	ages := map[claimKey]metav1.Time{}
	older := func(k claimKey, at metav1.Time) {
		if cur, ok := ages[k]; !ok || at.Before(&cur) {
			ages[k] = at
		}
	}
	seen := map[string]bool{}
	var involved []*v1.Tenant
	for i := range routes.Items {
		if t := c.tenantOf(&routes.Items[i]); t != nil && !seen[t.Name] {
			seen[t.Name] = true
			involved = append(involved, t)
		}
	}
	for i := range recorded.Items {
		if t := c.tenants[recorded.Items[i].Name]; t != nil && !seen[t.Name] {
			seen[t.Name] = true
			involved = append(involved, t)
		}
	}
	for _, t := range involved {
		g := tenant.GroupKey(t)
		b, err := c.budgetOf(ctx, t)
		if err != nil {
			return nil, err
		}
		if s == "" {
			// Only h itself: a lookup, not a walk over all the tenant's names.
			if at, ok := b.claimed[h]; ok {
				older(claimKey{g, h}, at)
			}
		} else {
			for x, at := range b.claimed {
				if match(string(x)) {
					older(claimKey{g, x}, at)
				}
			}
		}
		for i := range t.Status.HostnameClaims {
			rec := &t.Status.HostnameClaims[i]
			x := v1.Hostname(rec.Hostname)
			if match(rec.Hostname) && Allowed(t.Spec.Hostnames, x) && recordLive(rec, c.now, c.grace) {
				older(claimKey{g, x}, rec.Since)
			}
		}
	}
	order := make([]claimKey, 0, len(ages))
	for k := range ages {
		order = append(order, k)
	}
	slices.SortFunc(order, func(a, b claimKey) int {
		ta, tb := ages[a], ages[b]
		return cmp.Or(ta.Compare(tb.Time), cmp.Compare(a.group, b.group), cmp.Compare(a.host, b.host))
	})
	won := map[claimKey]bool{}
	var winners []claimKey
	for _, k := range order {
		if !slices.ContainsFunc(winners, func(w claimKey) bool { return w.group != k.group && Overlap(w.host, k.host) }) {
			won[k] = true
			winners = append(winners, k)
		}
	}
	c.decided[key] = won
	return won, nil
}

// holds reports whether tenant t's group wins hostname h.
func (c *claims) holds(ctx context.Context, t *v1.Tenant, h v1.Hostname) (bool, error) {
	s, err := c.root(ctx, h)
	if err != nil {
		return false, err
	}
	won, err := c.decide(ctx, s, h)
	if err != nil {
		return false, err
	}
	return won[claimKey{tenant.GroupKey(t), h}], nil
}

// related are the Routes whose outcome a change of a claim on h may change:
// every Route with a claim under the same topmost wildcard (or on h itself).
// They are the cache's objects: only read them.
func (c *claims) related(ctx context.Context, h v1.Hostname) ([]v1.Route, error) {
	s, err := c.root(ctx, h)
	if err != nil {
		return nil, err
	}
	if name, wild := baseName(string(h)); wild && (s == "" || len(name) < len(s)) {
		s = name // the claim may be gone already: its own wildcard counts
	}
	// Callers only read names: no copies.
	var list v1.RouteList
	if s == "" {
		err = c.c.List(ctx, &list, client.MatchingFields{IndexHostname: string(h)}, client.UnsafeDisableDeepCopy)
	} else {
		err = c.c.List(ctx, &list, client.MatchingFields{IndexDomain: s}, client.UnsafeDisableDeepCopy)
	}
	return list.Items, err
}

// wantRecords is the claim records of a tenant at now: a record for every
// hostname it validly claims (Since kept from the existing record), the
// released ones kept through the grace period. It also returns when the
// next release expires (zero: none pending).
func wantRecords(cur []v1.HostnameClaim, claimed map[v1.Hostname]metav1.Time, now time.Time, grace time.Duration) ([]v1.HostnameClaim, time.Time) {
	stamp := metav1.NewTime(now.Truncate(time.Second))
	var out []v1.HostnameClaim
	var next time.Time
	have := map[string]bool{}
	for _, rec := range cur {
		have[rec.Hostname] = true
		if _, ok := claimed[v1.Hostname(rec.Hostname)]; ok {
			out = append(out, v1.HostnameClaim{Hostname: rec.Hostname, Since: rec.Since})
			continue
		}
		released := rec.Released
		if released == nil {
			released = &stamp
		}
		expires := released.Add(grace)
		if !now.Before(expires) {
			continue
		}
		if next.IsZero() || expires.Before(next) {
			next = expires
		}
		out = append(out, v1.HostnameClaim{Hostname: rec.Hostname, Since: rec.Since, Released: released})
	}
	for h := range claimed {
		if !have[string(h)] {
			out = append(out, v1.HostnameClaim{Hostname: string(h), Since: stamp})
		}
	}
	slices.SortFunc(out, func(a, b v1.HostnameClaim) int { return cmp.Compare(a.Hostname, b.Hostname) })
	return out, next
}

// recordClaims brings a tenant's claim records up to date and returns when
// to look again (a release expiring).
func (r *Reconciler) recordClaims(ctx context.Context, name string) (time.Duration, error) {
	// Read without a copy (it holds every record); copied only to write.
	t, err := tenant.Lookup(ctx, r.Client, name)
	if err != nil || t == nil || !t.DeletionTimestamp.IsZero() {
		return 0, err
	}
	c, err := r.newClaims(ctx)
	if err != nil {
		return 0, err
	}
	b, err := c.budgetOf(ctx, t)
	if err != nil {
		return 0, err
	}
	want, next := wantRecords(t.Status.HostnameClaims, b.claimed, c.now, c.grace)
	var after time.Duration
	if !next.IsZero() {
		after = next.Sub(c.now) + time.Second
	}
	if equality.Semantic.DeepEqual(want, t.Status.HostnameClaims) {
		return after, nil
	}
	patch := client.MergeFromWithOptions(t, client.MergeFromWithOptimisticLock{})
	changed := t.DeepCopy()
	changed.Status.HostnameClaims = want
	return after, r.Client.Status().Patch(ctx, changed, patch)
}
