package snapshot

import (
	"context"
	"reflect"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
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
	// The objects read to make these parts (their status may have changed):
	// all of them, or those named.
	readAll             bool
	readLBs, readRoutes map[string]bool
	// id numbers the parts made; from is the id of the parts these were
	// made from by reading the objects named (0: listed), which only those
	// objects can differ from (diffTenant looks at those alone).
	id, from uint64
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

// changedObjects is what the events of a namespace were about: a few
// LoadBalancers and Routes by name (read again one by one), or anything
// (a Secret, many objects: the namespace is listed again).
type changedObjects struct {
	all         bool
	lbs, routes map[string]bool
}

// maxChangedObjects is how many objects of a namespace are read one by one
// rather than by listing it.
const maxChangedObjects = 64

// namespaceChanged counts an event of an object of a tenant namespace and
// records what it was about (called by the watch handlers).
func (b *Builder) namespaceChanged(o client.Object) {
	ns := o.GetNamespace()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq[ns]++
	d := b.dirty[ns]
	if d == nil {
		d = &changedObjects{lbs: map[string]bool{}, routes: map[string]bool{}}
		b.dirty[ns] = d
	}
	if d.all {
		return // listed again anyway
	}
	switch o.(type) {
	case *v1.LoadBalancer:
		d.lbs[o.GetName()] = true
	case *v1.Route:
		d.routes[o.GetName()] = true
	default:
		d.all = true
	}
	if len(d.lbs)+len(d.routes) > maxChangedObjects {
		d.all = true
	}
	if d.all {
		d.lbs, d.routes = nil, nil
	}
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
// reading the namespace only when an event came since the last time (only
// the objects the events named, when they are few and no Secret changed;
// else listing it) or what the parts depend on changed, and mapping only
// objects whose inputs changed. Objects read from the cache are shared:
// nothing here modifies them.
func (b *Builder) tenantObjects(ctx context.Context, t *v1.Tenant, nodes *v1.TenantNodes, key tenantKey) (parts *tenantParts, err error) {
	ns := tenant.Namespace(t.Name)
	b.mu.Lock()
	seq, prev, dirty := b.seq[ns], b.parts[ns], b.dirty[ns]
	if prev != nil && prev.seq == seq && prev.key == key {
		b.mu.Unlock()
		return prev, nil
	}
	delete(b.dirty, ns) // taken: events from now on are the next reconcile's
	b.mu.Unlock()
	defer func() {
		if err != nil { // read again in full next time
			b.mu.Lock()
			b.dirty[ns] = &changedObjects{all: true}
			b.mu.Unlock()
		}
	}()
	if prev != nil && prev.key != key {
		prev = nil // made next to something else: make everything again
	}
	m := &partMaker{b: b, ctx: ctx, t: t, nodes: nodes, ns: ns}
	var next *tenantParts
	if prev != nil && dirty != nil && !dirty.all {
		next, err = m.readChanged(prev, dirty)
		if next != nil {
			next.readLBs, next.readRoutes, next.from = dirty.lbs, dirty.routes, prev.id
		}
	} else {
		next, err = m.readAll(prev)
		if next != nil {
			next.readAll = true
		}
	}
	if err != nil {
		return nil, err
	}
	next.seq, next.key = seq, key
	b.mu.Lock()
	b.partsSeq++
	next.id = b.partsSeq
	b.parts[ns] = next
	b.mu.Unlock()
	return next, nil
}

// partMaker makes the parts of one tenant's objects.
type partMaker struct {
	b     *Builder
	ctx   context.Context
	t     *v1.Tenant
	nodes *v1.TenantNodes
	ns    string
	// secrets: the namespace's, when listed; else each is read when named.
	secrets       map[string]*corev1.Secret
	secretsListed bool
}

func (m *partMaker) listSecrets() error {
	if m.secretsListed {
		return nil
	}
	var list corev1.SecretList
	if err := m.b.Client.List(m.ctx, &list, client.InNamespace(m.ns), client.UnsafeDisableDeepCopy); err != nil {
		return err
	}
	m.secretsListed = true
	m.secrets = make(map[string]*corev1.Secret, len(list.Items))
	for i := range list.Items {
		m.secrets[list.Items[i].Name] = &list.Items[i]
	}
	return nil
}

func (m *partMaker) secret(name string) *corev1.Secret {
	if m.secretsListed {
		return m.secrets[name]
	}
	if s, ok := m.secrets[name]; ok {
		return s
	}
	if m.secrets == nil {
		m.secrets = map[string]*corev1.Secret{}
	}
	var s corev1.Secret
	if err := m.b.Client.Get(m.ctx, client.ObjectKey{Namespace: m.ns, Name: name}, &s, client.UnsafeDisableDeepCopy); err != nil {
		m.secrets[name] = nil // missing (or unreadable: a Secret event reads the namespace again)
		return nil
	}
	m.secrets[name] = &s
	return &s
}

func (m *partMaker) secretRV(name string) string {
	if s := m.secret(name); s != nil {
		return s.ResourceVersion
	}
	return ""
}

// secretOf reads a Secret and records its version in read.
func (m *partMaker) secretOf(read map[string]string) func(string) *corev1.Secret {
	return func(name string) *corev1.Secret {
		read[name] = m.secretRV(name)
		return m.secret(name)
	}
}

// lbPart is the part of lb: old when its inputs did not change, nil when it is not served.
func (m *partMaker) lbPart(lb *v1.LoadBalancer, old *lbPart) *lbPart {
	k := keyOfLB(lb)
	if k.deleting || !k.accepted || k.address == "" {
		return nil
	}
	if old != nil && old.key == k && old.a.lb.UID == lb.UID && sameSecrets(old.secrets, m.secretRV) {
		old.a.lb = lb // the newest object, for its status
		return old
	}
	p := &lbPart{key: k, skey: servedKey(lb), secrets: map[string]string{}}
	if isGateway(lb) {
		p.a, p.err = fromGateway(m.t.Name, lb, m.secretOf(p.secrets))
	} else {
		p.a, p.err = fromLoadBalancer(m.t.Name, lb, m.nodes)
	}
	p.a.global = globalKey(m.t, lb)
	return p
}

// routePart is the part of rt: old when its inputs did not change.
func (m *partMaker) routePart(rt *v1.Route, old *routePart) *routePart {
	k := keyOfRoute(rt)
	if old != nil && old.key == k && old.rt.UID == rt.UID && sameSecrets(old.secrets, m.secretRV) {
		old.rt = rt
		if old.a != nil {
			old.a.rt = rt
		}
		return old
	}
	p := &routePart{key: k, skey: servedKey(rt), rt: rt, secrets: map[string]string{}}
	switch {
	case !routeServed(rt):
	case route.OnGateways(rt):
		a := fromGatewayRoute(m.t, rt, m.nodes)
		p.a = &a
	default:
		a := fromRoute(m.t, rt, m.nodes, m.secretOf(p.secrets))
		p.a = &a
	}
	return p
}

// readAll lists the namespace.
func (m *partMaker) readAll(prev *tenantParts) (*tenantParts, error) {
	next := &tenantParts{}
	var lbList v1.LoadBalancerList
	if err := m.b.Client.List(m.ctx, &lbList, client.InNamespace(m.ns), client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	var rtList v1.RouteList
	if err := m.b.Client.List(m.ctx, &rtList, client.InNamespace(m.ns), client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	// The namespace's Secrets, listed once and only when a Route or a
	// Gateway may read one.
	if len(rtList.Items) > 0 || slices.ContainsFunc(lbList.Items, func(lb v1.LoadBalancer) bool { return isGateway(&lb) }) {
		if err := m.listSecrets(); err != nil {
			return nil, err
		}
	}
	oldLBs := map[string]*lbPart{}
	oldRoutes := map[string]*routePart{}
	if prev != nil {
		for _, p := range prev.lbs {
			oldLBs[p.a.lb.Name] = p
		}
		for _, p := range prev.routes {
			oldRoutes[p.rt.Name] = p
		}
	}
	for i := range lbList.Items {
		lb := &lbList.Items[i]
		if p := m.lbPart(lb, oldLBs[lb.Name]); p != nil {
			next.lbs = append(next.lbs, p)
		}
	}
	slices.SortFunc(next.lbs, func(x, y *lbPart) int { return strings.Compare(x.a.lb.Name, y.a.lb.Name) })
	for i := range rtList.Items {
		rt := &rtList.Items[i]
		next.routes = append(next.routes, m.routePart(rt, oldRoutes[rt.Name]))
	}
	slices.SortFunc(next.routes, func(x, y *routePart) int { return strings.Compare(x.rt.Name, y.rt.Name) })
	return next, nil
}

// readChanged reads again only the objects the events named; no Secret
// changed since prev was made.
func (m *partMaker) readChanged(prev *tenantParts, dirty *changedObjects) (*tenantParts, error) {
	next := &tenantParts{lbs: slices.Clone(prev.lbs), routes: slices.Clone(prev.routes)}
	for _, name := range slices.Sorted(mapKeys(dirty.lbs)) {
		i, found := slices.BinarySearchFunc(next.lbs, name, func(p *lbPart, n string) int { return strings.Compare(p.a.lb.Name, n) })
		var old *lbPart
		if found {
			old = next.lbs[i]
		}
		var p *lbPart
		lb := &v1.LoadBalancer{}
		switch err := m.b.Client.Get(m.ctx, client.ObjectKey{Namespace: m.ns, Name: name}, lb, client.UnsafeDisableDeepCopy); {
		case apierrors.IsNotFound(err):
		case err != nil:
			return nil, err
		default:
			p = m.lbPart(lb, old)
		}
		switch {
		case p != nil && found:
			next.lbs[i] = p
		case p != nil:
			next.lbs = slices.Insert(next.lbs, i, p)
		case found:
			next.lbs = slices.Delete(next.lbs, i, i+1)
		}
	}
	for _, name := range slices.Sorted(mapKeys(dirty.routes)) {
		i, found := slices.BinarySearchFunc(next.routes, name, func(p *routePart, n string) int { return strings.Compare(p.rt.Name, n) })
		var old *routePart
		if found {
			old = next.routes[i]
		}
		var p *routePart
		rt := &v1.Route{}
		switch err := m.b.Client.Get(m.ctx, client.ObjectKey{Namespace: m.ns, Name: name}, rt, client.UnsafeDisableDeepCopy); {
		case apierrors.IsNotFound(err):
		case err != nil:
			return nil, err
		default:
			p = m.routePart(rt, old)
		}
		switch {
		case p != nil && found:
			next.routes[i] = p
		case p != nil:
			next.routes = slices.Insert(next.routes, i, p)
		case found:
			next.routes = slices.Delete(next.routes, i, i+1)
		}
	}
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
			delete(b.dirty, ns)
		}
	}
	for name := range b.fleetOf {
		if !keep[tenant.Namespace(name)] {
			delete(b.fleetOf, name)
		}
	}
}
