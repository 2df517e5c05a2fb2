package snapshot

import (
	"cmp"
	"slices"
	"unsafe"

	"k8s.io/apimachinery/pkg/types"

	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/envoy/translate"
	"github.com/fleetlb/fleetlb/internal/model"
	"github.com/fleetlb/fleetlb/manager/route"
)

// ReasonConflicted says an object that is valid on its own is left out of
// its fleet because it conflicts with an older object (for example two load
// balancers on one VIP and port).
const ReasonConflicted = "Conflicted"

// assemble builds the fleet's model from admitted Routes (oldest first) and
// LoadBalancers that each translate on their own.
func assemble(fleet string, httpL, httpsL *model.SharedListener, routes []*admittedRoute, lbs []admittedLB) *model.Fleet {
	return (*assembleMemo)(nil).assemble(fleet, httpL, httpsL, routes, lbs)
}

// assembleMemo keeps what the Routes and what the LoadBalancers of a fleet
// made at its last reconcile, so a change of LoadBalancers does not merge
// the virtual hosts again, and a change of Routes does not gather the L4
// services again. Parts are never modified once made (a changed object gets
// new ones), so the same parts give the same result.
type assembleMemo struct {
	routes        []*admittedRoute
	httpL, httpsL *model.SharedListener
	l7            l7Side
	lbs           []lbIdentity
	l4            l4Side
}

// l7Side is what the Routes make: virtual hosts, and the certificates and
// backends they use (each in name order).
type l7Side struct {
	vhosts   []model.VirtualHost
	certs    []model.Certificate
	backends []model.Backend
}

// l4Side is what the LoadBalancers make: L4 services (by backend) and their
// backends (by name).
type l4Side struct {
	l4       []model.L4Service
	backends []model.Backend
}

// lbIdentity says which parts an admittedLB holds.
type lbIdentity struct {
	uid          types.UID
	gen          int64
	services     *model.L4Service
	backendsData *model.Backend
	global       string
	gateway      *gatewayParts
}

func identityOf(a *admittedLB) lbIdentity {
	return lbIdentity{uid: a.lb.UID, gen: a.lb.Generation, services: unsafe.SliceData(a.services), backendsData: unsafe.SliceData(a.backends),
		global: a.global, gateway: a.gateway}
}

func sameListener(a, b *model.SharedListener) bool {
	return (a == nil) == (b == nil) && (a == nil || *a == *b)
}

// assemble is the package's assemble, reusing the side (Routes or
// LoadBalancers) whose parts are the same as last time; m may be nil.
func (m *assembleMemo) assemble(fleet string, httpL, httpsL *model.SharedListener, routes []*admittedRoute, lbs []admittedLB) *model.Fleet {
	var l7 l7Side
	if m != nil && m.routes != nil && slices.Equal(m.routes, routes) && sameListener(m.httpL, httpL) && sameListener(m.httpsL, httpsL) {
		l7 = m.l7
	} else {
		l7 = assembleL7(httpL, httpsL, routes)
		if m != nil {
			m.routes, m.httpL, m.httpsL, m.l7 = slices.Clip(slices.Clone(routes)), httpL, httpsL, l7
			if m.routes == nil {
				m.routes = []*admittedRoute{}
			}
		}
	}
	var l4 l4Side
	ids := make([]lbIdentity, len(lbs))
	for i := range lbs {
		ids[i] = identityOf(&lbs[i])
	}
	if m != nil && m.lbs != nil && slices.Equal(m.lbs, ids) {
		l4 = m.l4
	} else {
		l4 = assembleL4(lbs)
		if m != nil {
			m.lbs, m.l4 = ids, l4
		}
	}

	f := &model.Fleet{Name: fleet, VirtualHosts: l7.vhosts, L4: l4.l4}
	if len(l7.vhosts) > 0 {
		f.HTTP, f.HTTPS = httpL, httpsL
	}
	// Clipped: what addGateways appends never lands in a memo's array.
	f.Certificates = slices.Clip(l7.certs)
	f.Backends = mergeByName(l7.backends, l4.backends)
	addGateways(f, routes, lbs)
	f.Backends = sortedByName(f.Backends)
	return f
}

// assembleL7 is what the Routes make.
func assembleL7(httpL, httpsL *model.SharedListener, routes []*admittedRoute) l7Side {
	var out l7Side
	vhosts, global := virtualHosts(routes, httpL, httpsL)
	if out.vhosts = vhosts; len(vhosts) == 0 {
		return out
	}
	// Only the certificates and backends the virtual hosts use.
	certs, backends := map[string]bool{}, map[string]bool{}
	n := len(global)
	for _, a := range routes {
		n += len(a.backends)
	}
	out.backends = make([]model.Backend, 0, n)
	for _, v := range vhosts {
		certs[v.Certificate] = true
		for _, r := range v.Routes {
			if r.Forward != nil {
				for _, wb := range r.Forward.Backends {
					backends[wb.Backend] = true
				}
			}
		}
	}
	for _, a := range routes {
		for _, c := range a.certs {
			if certs[c.Name] {
				delete(certs, c.Name)
				out.certs = append(out.certs, c)
			}
		}
		for _, be := range a.backends {
			if backends[be.Name] {
				delete(backends, be.Name)
				out.backends = append(out.backends, be)
			}
		}
	}
	for _, be := range global {
		if backends[be.Name] {
			delete(backends, be.Name)
			out.backends = append(out.backends, be)
		}
	}
	out.backends = sortedByName(out.backends)
	slices.SortFunc(out.certs, func(x, y model.Certificate) int { return cmp.Compare(x.Name, y.Name) })
	return out
}

// assembleL4 is what the LoadBalancers make.
func assembleL4(lbs []admittedLB) l4Side {
	var out l4Side
	globals := map[string][]admittedLB{}
	var globalOrder []string
	out.l4 = slices.Grow(out.l4, len(lbs))
	out.backends = make([]model.Backend, 0, len(lbs))
	for _, a := range lbs {
		if a.global != "" && len(a.services) > 0 {
			// Members of a global load balancer are joined below, per shared VIP.
			key := a.global + "@" + a.services[0].VIP.String()
			if globals[key] == nil {
				globalOrder = append(globalOrder, key)
			}
			globals[key] = append(globals[key], a)
			continue
		}
		out.l4 = append(out.l4, a.services...)
		out.backends = append(out.backends, a.backends...)
	}
	for _, key := range globalOrder {
		members := globals[key]
		slices.SortFunc(members, func(x, y admittedLB) int { return olderLB(x.lb, y.lb) })
		svcs, bes := mergeGlobalLoadBalancers(members[0].global, members)
		out.l4 = append(out.l4, svcs...)
		out.backends = append(out.backends, bes...)
	}
	slices.SortFunc(out.l4, func(x, y model.L4Service) int { return cmp.Compare(x.Backend, y.Backend) })
	out.backends = sortedByName(out.backends)
	return out
}

// mergeByName is a and b (each in name order) in name order, a first on equal names.
func mergeByName(a, b []model.Backend) []model.Backend {
	out := make([]model.Backend, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if b[0].Name < a[0].Name {
			out, b = append(out, b[0]), b[1:]
		} else {
			out, a = append(out, a[0]), a[1:]
		}
	}
	return append(append(out, a...), b...)
}

func olderLB(x, y *v1.LoadBalancer) int {
	return cmp.Or(x.CreationTimestamp.Compare(y.CreationTimestamp.Time), cmp.Compare(x.Namespace+"/"+x.Name, y.Namespace+"/"+y.Name))
}

// resolveConflicts admits objects oldest first and leaves out each one whose
// addition makes the fleet fail to translate: the younger side of every
// conflict. A failing prefix stays failing as objects are added, so the first
// failing object is found by bisection: a few conflicts cost a few log(n)
// translations, not one per object.
func resolveConflicts(fleet string, httpL, httpsL *model.SharedListener, routes []*admittedRoute, lbs []admittedLB) (*model.Fleet, []client.Object) {
	type entry struct {
		obj   client.Object
		route *admittedRoute
		lb    *admittedLB
	}
	var all []entry
	for _, a := range routes {
		all = append(all, entry{obj: a.rt, route: a})
	}
	for i := range lbs {
		all = append(all, entry{obj: lbs[i].lb, lb: &lbs[i]})
	}
	slices.SortStableFunc(all, func(x, y entry) int {
		return cmp.Or(x.obj.GetCreationTimestamp().Compare(y.obj.GetCreationTimestamp().Time),
			cmp.Compare(x.obj.GetNamespace(), y.obj.GetNamespace()), cmp.Compare(x.obj.GetName(), y.obj.GetName()))
	})
	build := func(es []entry) (*model.Fleet, error) {
		var rs []*admittedRoute
		var ls []admittedLB
		for _, e := range es {
			if e.route != nil {
				rs = append(rs, e.route)
			} else {
				ls = append(ls, *e.lb)
			}
		}
		// Routes keep their precedence order (oldest first, as route.Older).
		slices.SortStableFunc(rs, func(x, y *admittedRoute) int { return route.Older(x.rt, y.rt) })
		f := assemble(fleet, httpL, httpsL, rs, ls)
		_, err := translate.Translate(f)
		return f, err
	}
	var kept []entry
	var excluded []client.Object
	rest := all
	for len(rest) > 0 {
		// Find the shortest prefix of rest that fails next to what is kept.
		lo, hi := 0, len(rest) // kept+rest[:lo] is good; kept+rest[:hi] unknown
		if _, err := build(append(slices.Clone(kept), rest...)); err == nil {
			kept = append(kept, rest...)
			break
		}
		for hi-lo > 1 {
			mid := (lo + hi) / 2
			if _, err := build(append(slices.Clone(kept), rest[:mid]...)); err == nil {
				lo = mid
			} else {
				hi = mid
			}
		}
		// rest[hi-1] is the first one that breaks it.
		kept = append(kept, rest[:hi-1]...)
		excluded = append(excluded, rest[hi-1].obj)
		rest = rest[hi:]
	}
	f, _ := build(kept)
	return f, excluded
}

// conflictMessage tells the tenant why its object is left out without naming
// anyone else's object.
func conflictMessage(obj client.Object, fleet string) string {
	if _, ok := obj.(*v1.LoadBalancer); ok {
		return "this load balancer conflicts with an older object of fleet " + fleet + " (a port on the same address, or its global load balancer); it is not served"
	}
	return "this route conflicts with an older object of fleet " + fleet + " (a hostname, certificate or global route it is merged with); it is not served"
}

// sortedByName is backends in name order. Sorting indexes and placing each
// backend once moves far less memory than sorting the (large) values.
func sortedByName(bs []model.Backend) []model.Backend {
	byName := func(x, y model.Backend) int { return cmp.Compare(x.Name, y.Name) }
	if slices.IsSortedFunc(bs, byName) {
		return bs
	}
	idx := make([]int32, len(bs))
	for i := range idx {
		idx[i] = int32(i)
	}
	slices.SortFunc(idx, func(x, y int32) int { return cmp.Compare(bs[x].Name, bs[y].Name) })
	out := make([]model.Backend, len(bs))
	for k, i := range idx {
		out[k] = bs[i]
	}
	return out
}
