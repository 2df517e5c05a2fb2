package snapshot

import (
	"context"
	"reflect"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/envoy/translate"
	"github.com/fleetlb/fleetlb/internal/model"
	"github.com/fleetlb/fleetlb/manager/backends"
	"github.com/fleetlb/fleetlb/manager/route"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// The builder keeps, per tenant namespace, what the tenant's objects made
// (model parts and the outcome of translating each on its own), so that a
// reconcile redoes only what changed: a namespace with no event since is not
// even listed, and in one that is, an object is mapped and checked again only
// when what it is made from changed. The watch handlers count the events of
// each namespace; the per-fleet reconcile stays the point where they are
// coalesced. The result is the same as building everything from scratch
// (TestIncrementalSnapshotMatchesFullBuild).

// tenantParts is what one tenant's objects made at the last reconcile.
type tenantParts struct {
	seq    uint64    // the namespace's event count when it was listed
	key    tenantKey // what else the parts were made from
	lbs    []*lbPart
	routes []*routePart
}

// tenantKey is what a tenant's parts depend on besides its own objects.
type tenantKey struct {
	tenantUID, nodesUID string
	tenantGen, nodesGen int64
	deny                uint64 // the fleet's deny-list version
	listeners           string // the fleet's shared listeners (or why none)
}

// lbKey is what of a LoadBalancer its parts are made from (spec, identity,
// address and admission); a status write that changes none of it keeps them.
type lbKey struct {
	gen                int64
	deleting, accepted bool
	address            string
}

type lbPart struct {
	key     lbKey
	skey    string            // servedKey
	secrets map[string]string // Secrets read (a Gateway's certificates) → resourceVersion ("" for none)
	a       admittedLB
	err     error // the LoadBalancer cannot be mapped onto the model
	// trial is the outcome of translating it on its own, without and with
	// the fleet's shared listeners; nil until needed.
	trial [2]*trialOutcome
}

type trialOutcome struct{ err error }

// routeKey is what of a Route its parts are made from, besides its Secrets.
type routeKey struct {
	gen                int64
	deleting, accepted bool
	hostnames          string // status.acceptedHostnames
}

type routePart struct {
	key     routeKey
	skey    string // servedKey
	rt      *v1.Route
	secrets map[string]string // Secrets read → resourceVersion ("" for none)
	a       *admittedRoute    // nil when no hostname is served
	// checked is set once the Route was translated on its own; reason and
	// msg say why it is not served ("" when it is).
	checked     bool
	reason, msg string
	// checkedNextTo: for a Route on Gateway listeners, the parts of the
	// Gateways it was checked next to (rebuilt parts are new pointers).
	checkedNextTo []*gatewayParts
}

func keyOfLB(lb *v1.LoadBalancer) lbKey {
	k := lbKey{gen: lb.Generation, deleting: !lb.DeletionTimestamp.IsZero(), accepted: meta.IsStatusConditionTrue(lb.Status.Conditions, v1.ConditionAccepted)}
	if len(lb.Status.Addresses) > 0 {
		k.address = string(lb.Status.Addresses[0].IP)
	}
	return k
}

func keyOfRoute(rt *v1.Route) routeKey {
	k := routeKey{gen: rt.Generation, deleting: !rt.DeletionTimestamp.IsZero(), accepted: meta.IsStatusConditionTrue(rt.Status.Conditions, v1.ConditionAccepted)}
	var hs []string
	for _, h := range rt.Status.AcceptedHostnames {
		hs = append(hs, string(h))
	}
	k.hostnames = strings.Join(hs, ",")
	return k
}

// namespaceChanged counts an event of a tenant namespace (called by the watch handlers).
func (b *Builder) namespaceChanged(ns string) {
	b.mu.Lock()
	b.seq[ns]++
	b.mu.Unlock()
}

// denyVersion numbers the fleet's deny-lists: parts made next to another
// deny-list are made again.
func (b *Builder) denyVersion(fleet string, deny backends.DenyList) uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	d := b.deny[fleet]
	if d == nil || !reflect.DeepEqual(d.list, deny) {
		b.denySeq++
		d = &denyEntry{list: deny, version: b.denySeq}
		b.deny[fleet] = d
	}
	return d.version
}

type denyEntry struct {
	list    backends.DenyList
	version uint64
}

// tenantObjects returns the parts of a tenant's LoadBalancers and Routes,
// listing the namespace only when an event came since the last time or what
// the parts depend on changed, and mapping only objects whose inputs changed.
// Objects read from the cache are shared: nothing here modifies them.
func (b *Builder) tenantObjects(ctx context.Context, t *v1.Tenant, nodes *v1.TenantNodes, key tenantKey) (*tenantParts, error) {
	ns := tenant.Namespace(t.Name)
	b.mu.Lock()
	seq, prev := b.seq[ns], b.parts[ns]
	b.mu.Unlock()
	if prev != nil && prev.seq == seq && prev.key == key {
		return prev, nil
	}
	if prev != nil && prev.key != key {
		prev = nil // made next to something else: make everything again
	}
	next := &tenantParts{seq: seq, key: key}

	// The namespace's Secrets, listed once and only when a Route or a
	// Gateway may read one.
	var secrets map[string]*corev1.Secret
	secretsListed := false
	listSecrets := func() error {
		if secretsListed {
			return nil
		}
		secretsListed = true
		var list corev1.SecretList
		if err := b.Client.List(ctx, &list, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
			return err
		}
		secrets = make(map[string]*corev1.Secret, len(list.Items))
		for i := range list.Items {
			secrets[list.Items[i].Name] = &list.Items[i]
		}
		return nil
	}
	secretRV := func(name string) string {
		if s := secrets[name]; s != nil {
			return s.ResourceVersion
		}
		return ""
	}
	// secretOf reads a Secret and records its version in read.
	secretOf := func(read map[string]string) func(string) *corev1.Secret {
		return func(name string) *corev1.Secret {
			read[name] = secretRV(name)
			return secrets[name]
		}
	}

	var lbList v1.LoadBalancerList
	if err := b.Client.List(ctx, &lbList, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	for i := range lbList.Items {
		if isGateway(&lbList.Items[i]) {
			if err := listSecrets(); err != nil {
				return nil, err
			}
			break
		}
	}
	oldLBs := map[string]*lbPart{}
	if prev != nil {
		for _, p := range prev.lbs {
			oldLBs[p.a.lb.Name] = p
		}
	}
	for i := range lbList.Items {
		lb := &lbList.Items[i]
		k := keyOfLB(lb)
		if k.deleting || !k.accepted || k.address == "" {
			continue
		}
		if p := oldLBs[lb.Name]; p != nil && p.key == k && p.a.lb.UID == lb.UID && sameSecrets(p.secrets, secretRV) {
			p.a.lb = lb // the newest object, for its status
			next.lbs = append(next.lbs, p)
			continue
		}
		p := &lbPart{key: k, skey: servedKey(lb), secrets: map[string]string{}}
		if isGateway(lb) {
			p.a, p.err = fromGateway(t.Name, lb, secretOf(p.secrets))
		} else {
			p.a, p.err = fromLoadBalancer(t.Name, lb, nodes)
		}
		p.a.global = globalKey(t, lb)
		next.lbs = append(next.lbs, p)
	}
	slices.SortFunc(next.lbs, func(x, y *lbPart) int { return strings.Compare(x.a.lb.Name, y.a.lb.Name) })

	var rtList v1.RouteList
	if err := b.Client.List(ctx, &rtList, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	if len(rtList.Items) > 0 {
		if err := listSecrets(); err != nil {
			return nil, err
		}
	}
	oldRoutes := map[string]*routePart{}
	if prev != nil {
		for _, p := range prev.routes {
			oldRoutes[p.rt.Name] = p
		}
	}
	for i := range rtList.Items {
		rt := &rtList.Items[i]
		k := keyOfRoute(rt)
		if p := oldRoutes[rt.Name]; p != nil && p.key == k && p.rt.UID == rt.UID && sameSecrets(p.secrets, secretRV) {
			p.rt = rt
			if p.a != nil {
				p.a.rt = rt
			}
			next.routes = append(next.routes, p)
			continue
		}
		p := &routePart{key: k, skey: servedKey(rt), rt: rt, secrets: map[string]string{}}
		switch {
		case !routeServed(rt):
		case route.OnGateways(rt):
			a := fromGatewayRoute(t, rt, nodes)
			p.a = &a
		default:
			a := fromRoute(t, rt, nodes, secretOf(p.secrets))
			p.a = &a
		}
		next.routes = append(next.routes, p)
	}
	slices.SortFunc(next.routes, func(x, y *routePart) int { return strings.Compare(x.rt.Name, y.rt.Name) })

	b.mu.Lock()
	b.parts[ns] = next
	b.mu.Unlock()
	return next, nil
}

func sameSecrets(read map[string]string, now func(string) string) bool {
	for name, rv := range read {
		if now(name) != rv {
			return false
		}
	}
	return true
}

// checkRoute translates a Route on its own next to the fleet's listeners
// (once per part: the listeners are part of its tenant's key), or a Route on
// Gateway listeners next to its Gateways (every time: they are not part of
// the key).
func checkRoute(p *routePart, fleet string, httpL, httpsL *model.SharedListener, noL7 string, gateways []admittedLB) {
	a := p.a
	if a.gateway != nil {
		// Checked again only when one of its Gateways changed, not on
		// every reconcile of the fleet.
		var next []*gatewayParts
		for _, g := range gateways {
			if g.lb.Namespace == a.rt.Namespace && slices.ContainsFunc(a.rt.Spec.Parents, func(pr v1.RouteParent) bool { return pr.LoadBalancer == g.lb.Name }) {
				next = append(next, g.gateway)
			}
		}
		if !p.checked || !slices.Equal(p.checkedNextTo, next) {
			p.checked, p.checkedNextTo = true, next
			p.reason, p.msg = checkGatewayRoute(fleet, a, gateways)
		}
		return
	}
	if p.checked {
		return
	}
	p.checked = true
	mini := &model.Fleet{Name: fleet, HTTP: httpL, HTTPS: httpsL, Certificates: a.certs, Backends: a.backends}
	switch {
	case noL7 != "":
		p.reason, p.msg = v1.ReasonPending, noL7
	case len(a.hosts) == 0:
		p.reason, p.msg = v1.ReasonInvalidSpec, "no rule of the route can be served"
	default:
		mini.VirtualHosts, _ = virtualHosts([]*admittedRoute{a}, httpL, httpsL)
		if len(mini.VirtualHosts) == 0 {
			p.reason, p.msg = v1.ReasonInvalidSpec, "no hostname of the route can be served on the fleet's listeners"
		} else if _, err := translate.Translate(mini); err != nil {
			p.reason, p.msg = v1.ReasonInvalidSpec, err.Error()
		}
	}
}

// checkLB translates a LoadBalancer on its own, next to the shared
// listeners when the fleet serves any Route (withL7).
func checkLB(p *lbPart, fleet string, httpL, httpsL *model.SharedListener, withL7 bool) error {
	if p.err != nil {
		return p.err
	}
	i := 0
	f := &model.Fleet{Name: fleet, L4: p.a.services, Backends: p.a.backends}
	if withL7 {
		i, f.HTTP, f.HTTPS = 1, httpL, httpsL
	}
	if p.trial[i] == nil {
		_, err := translate.Translate(withGateway(f, p.a))
		p.trial[i] = &trialOutcome{err: err}
	}
	return p.trial[i].err
}

// forgetTenantsBut drops what is kept for tenants that no longer exist.
func (b *Builder) forgetTenantsBut(tenants []v1.Tenant) {
	keep := make(map[string]bool, len(tenants))
	for i := range tenants {
		keep[tenant.Namespace(tenants[i].Name)] = true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for ns := range b.parts {
		if !keep[ns] {
			delete(b.parts, ns)
			delete(b.seq, ns)
		}
	}
	for name := range b.fleetOf {
		if !keep[tenant.Namespace(name)] {
			delete(b.fleetOf, name)
		}
	}
}
