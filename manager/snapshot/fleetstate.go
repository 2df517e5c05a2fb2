package snapshot

import (
	"cmp"
	"slices"
	"strings"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fleetlb/fleetlb/internal/model"
	"github.com/fleetlb/fleetlb/manager/route"
)

// fleetState is what a fleet's objects assembled into at the last
// reconcile, kept so that the next one changes it by the parts that changed
// (O(what changed), not O(the fleet)): the Routes in precedence order, each
// hostname's Routes and virtual host, the L4 services and backends in name
// order, and what the Programmed condition of each object is decided from.
// It is the same model that assemble makes of all parts
// (TestIncrementalSnapshotMatchesFullBuild compares with the full path).
// A fleet with a conflict between objects, or with objects held back after
// a NACK, takes the full path (Reconcile's reconcileFull); the state is then
// made again from all parts at the next reconcile.
type fleetState struct {
	valid         bool
	fellBack      bool                    // the incremental model of this reconcile did not translate
	nss           []string                // the fleet's tenant namespaces, in tenant order
	parts         map[string]*tenantParts // namespace → the parts assembled
	httpL, httpsL *model.SharedListener
	noL7          string
	withL7        bool // the LoadBalancers were checked next to the shared listeners

	routes   []*routePart        // Routes with something to serve (part.a != nil), oldest first
	okRoutes int                 // of routes, those checked good
	gwRoutes []*routePart        // of routes, those on Gateway listeners, oldest first
	gwOK     map[*routePart]bool // of gwRoutes, those counted in okRoutes
	hosts    map[string]*hostState
	backRefs map[string]*backendRef // L7 backends the virtual hosts use
	certRefs map[string]*certRef    // certificates the virtual hosts use
	vhosts   []model.VirtualHost    // by name
	certs    []model.Certificate    // by name

	lbOK     map[*lbPart]bool            // LoadBalancers checked good
	gateways []*lbPart                   // mapped Gateways (checked or not), namespace/name order
	globals  map[string]*globalState     // global key@VIP → its members
	l4svc    map[string]*model.L4Service // L4 services by backend name
	l4be     map[string]*model.Backend   // L4 backends by name
	l4       []model.L4Service           // by backend name
	backends []model.Backend             // L7 and L4 backends, by name

	fleet *model.Fleet // the last model assembled

	objs    map[string]*objState // servedKey → what its Programmed condition is decided from
	pending map[uint64][]string  // xDS generation → served objects waiting for it to be acknowledged
	acked   uint64               // the acknowledged generation at the last status pass
	// statusStale: conditions were not all decided at the last reconcile (a
	// write failed, or another replica wrote status): the next looks at every object.
	statusStale bool
}

// hostState is one hostname: the Routes with a part for it and what they made.
type hostState struct {
	routes []*admittedRoute // oldest first
	vh     *model.VirtualHost
	uses   []string // L7 backends its virtual host uses (references held in backRefs)
	cert   string   // the certificate it uses ("" none; a reference held in certRefs)
	global []model.Backend
}

type backendRef struct {
	be *model.Backend
	n  int
}

type certRef struct {
	c *model.Certificate
	n int
}

// globalState is the members of one global load balancer on one VIP and what they made.
type globalState struct {
	members []*lbPart
	svcs    []model.L4Service
	bes     []model.Backend
}

// objState is what an object's Programmed condition is decided from.
type objState struct {
	obj    client.Object
	gen    int64
	served bool // admitted and mapped (else a Route with no hostname accepted)
	// reason and msg say why a served object is not served ("" when it is).
	reason, msg string
}

// change is what the parts of one reconcile changed: parts gone and parts
// come (a changed object is both), and objects read again.
type change struct {
	lbsGone, lbsCome       []*lbPart
	routesGone, routesCome []*routePart
	read                   []string // servedKeys of objects read again (their status may have changed)
	readObjs               []client.Object
}

func (c *change) empty() bool {
	return len(c.lbsGone)+len(c.lbsCome)+len(c.routesGone)+len(c.routesCome)+len(c.read) == 0
}

// diffTenant adds to c what changed between the parts of one namespace.
func diffTenant(c *change, old, cur *tenantParts, all bool) {
	if old == cur && !all {
		return
	}
	var oldLBs []*lbPart
	var oldRoutes []*routePart
	if old != nil {
		oldLBs, oldRoutes = old.lbs, old.routes
	}
	var curLBs []*lbPart
	var curRoutes []*routePart
	if cur != nil {
		curLBs, curRoutes = cur.lbs, cur.routes
	}
	readAll := all || cur == nil || cur.readAll
	if !readAll && old != nil && cur.from != 0 && cur.from == old.id {
		diffRead(c, old, cur)
		return
	}
	// Both in name order.
	i, j := 0, 0
	for i < len(oldLBs) || j < len(curLBs) {
		switch {
		case j == len(curLBs) || i < len(oldLBs) && oldLBs[i].a.lb.Name < curLBs[j].a.lb.Name:
			c.lbsGone = append(c.lbsGone, oldLBs[i])
			i++
		case i == len(oldLBs) || curLBs[j].a.lb.Name < oldLBs[i].a.lb.Name:
			c.lbsCome = append(c.lbsCome, curLBs[j])
			j++
		default:
			if oldLBs[i] != curLBs[j] {
				c.lbsGone, c.lbsCome = append(c.lbsGone, oldLBs[i]), append(c.lbsCome, curLBs[j])
			}
			i, j = i+1, j+1
		}
	}
	i, j = 0, 0
	for i < len(oldRoutes) || j < len(curRoutes) {
		switch {
		case j == len(curRoutes) || i < len(oldRoutes) && oldRoutes[i].rt.Name < curRoutes[j].rt.Name:
			c.routesGone = append(c.routesGone, oldRoutes[i])
			i++
		case i == len(oldRoutes) || curRoutes[j].rt.Name < oldRoutes[i].rt.Name:
			c.routesCome = append(c.routesCome, curRoutes[j])
			j++
		default:
			if oldRoutes[i] != curRoutes[j] {
				c.routesGone, c.routesCome = append(c.routesGone, oldRoutes[i]), append(c.routesCome, curRoutes[j])
			}
			i, j = i+1, j+1
		}
	}
	if cur == nil {
		return
	}
	// Objects read again: their status may say something else now.
	for _, p := range cur.lbs {
		if readAll || cur.readLBs[p.a.lb.Name] {
			c.read, c.readObjs = append(c.read, p.skey), append(c.readObjs, p.a.lb)
		}
	}
	for _, p := range cur.routes {
		if readAll || cur.readRoutes[p.rt.Name] {
			c.read, c.readObjs = append(c.read, p.skey), append(c.readObjs, p.rt)
		}
	}
}

// diffRead is diffTenant of parts made from old by reading again the
// objects cur names: only those can differ, looked up by name (O(objects
// read), not O(the tenant's objects)).
func diffRead(c *change, old, cur *tenantParts) {
	lbName := func(p *lbPart, n string) int { return strings.Compare(p.a.lb.Name, n) }
	for _, n := range slices.Sorted(mapKeys(cur.readLBs)) {
		i, was := slices.BinarySearchFunc(old.lbs, n, lbName)
		j, is := slices.BinarySearchFunc(cur.lbs, n, lbName)
		switch {
		case was && is && old.lbs[i] == cur.lbs[j]:
		default:
			if was {
				c.lbsGone = append(c.lbsGone, old.lbs[i])
			}
			if is {
				c.lbsCome = append(c.lbsCome, cur.lbs[j])
			}
		}
		if is {
			c.read, c.readObjs = append(c.read, cur.lbs[j].skey), append(c.readObjs, cur.lbs[j].a.lb)
		}
	}
	rtName := func(p *routePart, n string) int { return strings.Compare(p.rt.Name, n) }
	for _, n := range slices.Sorted(mapKeys(cur.readRoutes)) {
		i, was := slices.BinarySearchFunc(old.routes, n, rtName)
		j, is := slices.BinarySearchFunc(cur.routes, n, rtName)
		switch {
		case was && is && old.routes[i] == cur.routes[j]:
		default:
			if was {
				c.routesGone = append(c.routesGone, old.routes[i])
			}
			if is {
				c.routesCome = append(c.routesCome, cur.routes[j])
			}
		}
		if is {
			c.read, c.readObjs = append(c.read, cur.routes[j].skey), append(c.readObjs, cur.routes[j].rt)
		}
	}
}

// olderPart orders Routes as route.Older (a part's Route may be replaced by
// a newer copy of the same object; what Older compares does not change).
func olderPart(x, y *routePart) int { return route.Older(x.rt, y.rt) }

func olderAdmitted(x, y *admittedRoute) int { return route.Older(x.rt, y.rt) }

// insertSorted inserts v into s (sorted by cmp) after its equals.
func insertSorted[T any](s []T, v T, cmp func(T, T) int) []T {
	i, _ := slices.BinarySearchFunc(s, v, cmp)
	for i < len(s) && cmp(s[i], v) == 0 {
		i++
	}
	return slices.Insert(s, i, v)
}

// removeSorted removes v (by identity) from s (sorted by cmp).
func removeSorted[T comparable](s []T, v T, cmp func(T, T) int) []T {
	i, _ := slices.BinarySearchFunc(s, v, cmp)
	for ; i < len(s) && cmp(s[i], v) == 0; i++ {
		if s[i] == v {
			return slices.Delete(s, i, i+1)
		}
	}
	return s
}

// patchByName is s (in name order) with the entries named in touched
// replaced by what now says (dropped when it has none). It returns s itself
// when nothing is touched, a new slice otherwise (s is never modified: the
// translator compares with it).
func patchByName[T any](s []T, name func(*T) string, touched map[string]bool, now func(string) (*T, bool)) []T {
	if len(touched) == 0 {
		return s
	}
	names := slices.Sorted(mapKeys(touched))
	out := make([]T, 0, len(s)+len(names))
	// Runs of untouched entries are copied whole: a touched name is found by bisection.
	last := 0
	for _, n := range names {
		i, found := slices.BinarySearchFunc(s[last:], n, func(x T, n string) int { return strings.Compare(name(&x), n) })
		i += last
		out = append(out, s[last:i]...)
		last = i
		if found {
			last = i + 1
		}
		if v, ok := now(n); ok {
			out = append(out, *v)
		}
	}
	out = append(out, s[last:]...)
	return slices.Clip(out)
}

func backendName(b *model.Backend) string         { return b.Name }
func serviceBackend(s *model.L4Service) string    { return s.Backend }
func vhostName(v *model.VirtualHost) string       { return v.Name }
func certificateName(c *model.Certificate) string { return c.Name }

// assembler applies one reconcile's changes to a fleetState.
type assembler struct {
	s     *fleetState
	fleet string
	// What changed, to patch the sorted lists by.
	hosts, l7be, certs, l4names, backs map[string]bool
	globals                            map[string]bool
	// What the touched names held before (the first value seen): a name
	// whose value is equal again is not touched (the lists keep the old one).
	oldBacks map[string]*model.Backend
	oldSvcs  map[string]*model.L4Service
	dup      bool // two parts of one name: left to the full path
	bulk     bool // building from scratch: sorted once at the end
}

func newAssembler(s *fleetState, fleet string) *assembler {
	return &assembler{s: s, fleet: fleet, hosts: map[string]bool{}, l7be: map[string]bool{}, certs: map[string]bool{},
		l4names: map[string]bool{}, backs: map[string]bool{}, globals: map[string]bool{},
		oldBacks: map[string]*model.Backend{}, oldSvcs: map[string]*model.L4Service{}}
}

// reset empties s for a build from scratch.
func (s *fleetState) reset() {
	*s = fleetState{parts: map[string]*tenantParts{}, hosts: map[string]*hostState{}, backRefs: map[string]*backendRef{},
		certRefs: map[string]*certRef{}, lbOK: map[*lbPart]bool{}, gwOK: map[*routePart]bool{}, globals: map[string]*globalState{},
		l4svc: map[string]*model.L4Service{}, l4be: map[string]*model.Backend{}, objs: map[string]*objState{}, pending: map[uint64][]string{}, acked: s.acked}
}

// routeGone takes a Route's part out.
func (a *assembler) routeGone(p *routePart) {
	s := a.s
	if p.a == nil {
		return
	}
	s.routes = removeSorted(s.routes, p, olderPart)
	if p.a.gateway != nil {
		s.gwRoutes = removeSorted(s.gwRoutes, p, olderPart)
		if s.gwOK[p] {
			delete(s.gwOK, p)
			s.okRoutes--
		}
		return
	}
	if p.reason != "" {
		return
	}
	s.okRoutes--
	a.hostsOf(p.a, func(h *hostState) { h.routes = removeSorted(h.routes, p.a, olderAdmitted) })
}

// routeCome puts a Route's part in (it is checked first).
func (a *assembler) routeCome(p *routePart) {
	s := a.s
	if p.a == nil {
		return
	}
	if a.bulk {
		s.routes = append(s.routes, p)
	} else {
		s.routes = insertSorted(s.routes, p, olderPart)
	}
	if p.a.gateway != nil {
		if a.bulk {
			s.gwRoutes = append(s.gwRoutes, p)
		} else {
			s.gwRoutes = insertSorted(s.gwRoutes, p, olderPart)
		}
		return // checked next to the Gateways (gatewayRoutes)
	}
	checkRoute(p, a.fleet, s.httpL, s.httpsL, s.noL7, nil)
	if p.reason != "" {
		return
	}
	s.okRoutes++
	a.hostsOf(p.a, func(h *hostState) {
		if a.bulk {
			h.routes = append(h.routes, p.a)
		} else {
			h.routes = insertSorted(h.routes, p.a, olderAdmitted)
		}
	})
}

// hostsOf calls f with the state of each hostname of a (made when missing) and marks them changed.
func (a *assembler) hostsOf(r *admittedRoute, f func(*hostState)) {
	for _, hp := range r.hosts {
		h := a.s.hosts[hp.hostname]
		if h == nil {
			h = &hostState{}
			a.s.hosts[hp.hostname] = h
		}
		f(h)
		a.hosts[hp.hostname] = true
	}
}

// gatewayRoutes checks the Routes on Gateway listeners next to the Gateways
// (few; checkRoute checks one again only when its Gateways changed) and
// returns those whose outcome changed.
func (a *assembler) gatewayRoutes() []*routePart {
	s := a.s
	if a.bulk {
		slices.SortFunc(s.routes, olderPart)
		slices.SortFunc(s.gwRoutes, olderPart)
	}
	var gws []admittedLB
	for _, p := range s.gateways {
		gws = append(gws, p.a)
	}
	var changed []*routePart
	for _, p := range s.gwRoutes {
		was, wasMsg, checked := p.reason, p.msg, p.checked
		checkRoute(p, a.fleet, s.httpL, s.httpsL, s.noL7, gws)
		if !checked || p.reason != was || p.msg != wasMsg {
			changed = append(changed, p)
		}
		if ok := p.reason == ""; ok != s.gwOK[p] {
			if ok {
				s.gwOK[p] = true
				s.okRoutes++
			} else {
				delete(s.gwOK, p)
				s.okRoutes--
			}
		}
	}
	return changed
}

// gatewayGone and gatewayCome keep the list of mapped Gateways (Routes on
// their listeners are checked next to them, whether they are checked good or not).
func (a *assembler) gatewayGone(p *lbPart) {
	if p.err == nil && p.a.gateway != nil {
		a.s.gateways = slices.DeleteFunc(a.s.gateways, func(q *lbPart) bool { return q == p })
	}
}

func (a *assembler) gatewayCome(p *lbPart) {
	if p.err == nil && p.a.gateway != nil {
		i, _ := slices.BinarySearchFunc(a.s.gateways, p, func(x, y *lbPart) int { return cmp.Compare(x.skey, y.skey) })
		a.s.gateways = slices.Insert(a.s.gateways, i, p)
	}
}

// lbGone takes a LoadBalancer's part out.
func (a *assembler) lbGone(p *lbPart) {
	s := a.s
	if !s.lbOK[p] {
		return
	}
	delete(s.lbOK, p)
	if key := globalOf(p); key != "" {
		g := s.globals[key]
		g.members = slices.DeleteFunc(g.members, func(q *lbPart) bool { return q == p })
		a.globals[key] = true
		return
	}
	for i := range p.a.services {
		a.l4Out(p.a.services[i].Backend)
	}
	for i := range p.a.backends {
		a.l4BackendOut(p.a.backends[i].Name)
	}
}

// lbCome puts a LoadBalancer's part in (it is checked first) and returns
// the outcome of its check.
func (a *assembler) lbCome(p *lbPart) error {
	s := a.s
	if err := checkLB(p, a.fleet, s.httpL, s.httpsL, s.withL7); err != nil {
		return err
	}
	s.lbOK[p] = true
	if key := globalOf(p); key != "" {
		g := s.globals[key]
		if g == nil {
			g = &globalState{}
			s.globals[key] = g
		}
		g.members = append(g.members, p)
		a.globals[key] = true
		return nil
	}
	for i := range p.a.services {
		a.l4In(&p.a.services[i])
	}
	for i := range p.a.backends {
		a.l4BackendIn(&p.a.backends[i])
	}
	return nil
}

// globalOf is the global load balancer a LoadBalancer's services join ("" for none), as assembleL4.
func globalOf(p *lbPart) string {
	if p.a.global == "" || len(p.a.services) == 0 {
		return ""
	}
	return p.a.global + "@" + p.a.services[0].VIP.String()
}

func (a *assembler) l4Out(name string) {
	if _, ok := a.oldSvcs[name]; !ok {
		a.oldSvcs[name] = a.s.l4svc[name]
	}
	delete(a.s.l4svc, name)
	a.l4names[name] = true
}

func (a *assembler) l4In(svc *model.L4Service) {
	if _, ok := a.s.l4svc[svc.Backend]; ok {
		a.dup = true
	}
	a.s.l4svc[svc.Backend] = svc
	a.l4names[svc.Backend] = true
}

func (a *assembler) l4BackendOut(name string) {
	if _, ok := a.oldBacks[name]; !ok {
		a.oldBacks[name] = a.s.l4be[name]
	}
	delete(a.s.l4be, name)
	a.backs[name] = true
}

func (a *assembler) l4BackendIn(be *model.Backend) {
	if _, ok := a.s.l4be[be.Name]; ok {
		a.dup = true
	}
	a.s.l4be[be.Name] = be
	a.backs[be.Name] = true
}

// finish makes again what the changed hostnames and global load balancers
// made, and patches the fleet's lists by what changed.
func (a *assembler) finish() {
	s := a.s
	for key := range a.globals {
		g := s.globals[key]
		for i := range g.svcs {
			a.l4Out(g.svcs[i].Backend)
		}
		for i := range g.bes {
			a.l4BackendOut(g.bes[i].Name)
		}
		g.svcs, g.bes = nil, nil
		if len(g.members) == 0 {
			delete(s.globals, key)
			continue
		}
		slices.SortFunc(g.members, func(x, y *lbPart) int { return olderLB(x.a.lb, y.a.lb) })
		members := make([]admittedLB, len(g.members))
		for i, p := range g.members {
			members[i] = p.a
		}
		g.svcs, g.bes = mergeGlobalLoadBalancers(members[0].global, members)
		for i := range g.svcs {
			a.l4In(&g.svcs[i])
		}
		for i := range g.bes {
			a.l4BackendIn(&g.bes[i])
		}
	}
	for host := range a.hosts {
		if a.bulk {
			if h := s.hosts[host]; h != nil {
				slices.SortFunc(h.routes, olderAdmitted)
			}
		}
		a.host(host)
	}
	for name := range a.l7be {
		a.backs[name] = true
	}
	s.vhosts = patchByName(s.vhosts, vhostName, a.hosts, func(h string) (*model.VirtualHost, bool) {
		if x := s.hosts[h]; x != nil && x.vh != nil {
			return x.vh, true
		}
		return nil, false
	})
	s.certs = patchByName(s.certs, certificateName, a.certs, func(n string) (*model.Certificate, bool) {
		if r := s.certRefs[n]; r != nil {
			return r.c, true
		}
		return nil, false
	})
	for n := range a.l4names {
		if old, now := a.oldSvcs[n], s.l4svc[n]; old != nil && now != nil && old.Equal(now) {
			delete(a.l4names, n) // the same again: the list keeps the old one
		}
	}
	for n := range a.backs {
		var now *model.Backend
		if r := s.backRefs[n]; r != nil {
			now = r.be
		}
		if be := s.l4be[n]; be != nil {
			if now != nil {
				continue // both sides: a conflict, found below
			}
			now = be
		}
		if old := a.oldBacks[n]; old != nil && now != nil && old.Equal(now) {
			delete(a.backs, n)
		}
	}
	s.l4 = patchByName(s.l4, serviceBackend, a.l4names, func(n string) (*model.L4Service, bool) {
		svc, ok := s.l4svc[n]
		return svc, ok
	})
	s.backends = patchByName(s.backends, backendName, a.backs, func(n string) (*model.Backend, bool) {
		r, l7 := s.backRefs[n]
		be, l4 := s.l4be[n]
		switch {
		case l7 && l4:
			a.dup = true // both sides name one backend: the full path leaves the younger out
			return r.be, true
		case l7:
			return r.be, true
		case l4:
			return be, true
		}
		return nil, false
	})
}

// host makes a hostname's virtual host again from its Routes.
func (a *assembler) host(name string) {
	s := a.s
	h := s.hosts[name]
	for _, n := range h.uses {
		r := s.backRefs[n]
		if _, ok := a.oldBacks[n]; !ok {
			a.oldBacks[n] = r.be
		}
		if r.n--; r.n == 0 {
			delete(s.backRefs, n)
		}
		a.l7be[n] = true
	}
	if h.cert != "" {
		r := s.certRefs[h.cert]
		if r.n--; r.n == 0 {
			delete(s.certRefs, h.cert)
		}
		a.certs[h.cert] = true
	}
	h.vh, h.uses, h.cert, h.global = nil, nil, "", nil
	if len(h.routes) == 0 {
		delete(s.hosts, name)
		return
	}
	vh, global, ok := virtualHostOf(name, h.routes, s.httpL, s.httpsL)
	if !ok {
		return
	}
	h.vh, h.global = &vh, global
	// The backends and certificate it uses, as assembleL7 picks them: the
	// oldest Route's of that name, else a global backend.
	for _, r := range vh.Routes {
		if r.Forward == nil {
			continue
		}
		for _, wb := range r.Forward.Backends {
			if slices.Contains(h.uses, wb.Backend) {
				continue
			}
			be := a.find(h, wb.Backend)
			if be == nil {
				continue
			}
			h.uses = append(h.uses, wb.Backend)
			r := s.backRefs[wb.Backend]
			if r == nil {
				r = &backendRef{}
				s.backRefs[wb.Backend] = r
			}
			r.be, r.n = be, r.n+1
			a.l7be[wb.Backend] = true
		}
	}
	if vh.Certificate != "" {
		for _, rt := range h.routes {
			i := slices.IndexFunc(rt.certs, func(c model.Certificate) bool { return c.Name == vh.Certificate })
			if i < 0 {
				continue
			}
			h.cert = vh.Certificate
			r := s.certRefs[h.cert]
			if r == nil {
				r = &certRef{}
				s.certRefs[h.cert] = r
			}
			r.c, r.n = &rt.certs[i], r.n+1
			a.certs[h.cert] = true
			break
		}
	}
}

func (a *assembler) find(h *hostState, name string) *model.Backend {
	for _, rt := range h.routes {
		for i := range rt.backends {
			if rt.backends[i].Name == name {
				return &rt.backends[i]
			}
		}
	}
	for i := range h.global {
		if h.global[i].Name == name {
			return &h.global[i]
		}
	}
	return nil
}

// model is the fleet's model from what s holds, with the Gateways added.
func (s *fleetState) model(fleet string) *model.Fleet {
	f := &model.Fleet{Name: fleet, VirtualHosts: s.vhosts, L4: s.l4, Certificates: slices.Clip(s.certs), Backends: slices.Clip(s.backends)}
	if len(s.vhosts) > 0 {
		f.HTTP, f.HTTPS = s.httpL, s.httpsL
	}
	if len(s.gateways) > 0 {
		var routes []*admittedRoute
		for _, p := range s.gwRoutes {
			if p.reason == "" {
				routes = append(routes, p.a)
			}
		}
		var lbs []admittedLB
		for _, p := range s.gateways {
			if s.lbOK[p] {
				lbs = append(lbs, p.a)
			}
		}
		f.Backends = slices.Clone(f.Backends) // addGateways sorts it in place
		addGateways(f, routes, lbs)
	}
	return f
}

// objectOf records what an object's Programmed condition is decided from.
func (s *fleetState) objectOf(key string, obj client.Object, served bool, reason, msg string) {
	o := s.objs[key]
	if o == nil {
		o = &objState{}
		s.objs[key] = o
	}
	o.obj, o.gen, o.served, o.reason, o.msg = obj, obj.GetGeneration(), served, reason, msg
}
