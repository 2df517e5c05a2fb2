package snapshot

import (
	"cmp"
	"slices"

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
	f := &model.Fleet{Name: fleet}
	vhosts, global := virtualHosts(routes, httpL, httpsL)
	if f.VirtualHosts = vhosts; len(vhosts) > 0 {
		f.HTTP, f.HTTPS = httpL, httpsL
		// Only the certificates and backends the virtual hosts use.
		certs, backends := map[string]bool{}, map[string]bool{}
		n := len(global) + len(lbs)
		for _, a := range routes {
			n += len(a.backends)
		}
		f.Backends = make([]model.Backend, 0, n)
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
					f.Certificates = append(f.Certificates, c)
				}
			}
			for _, be := range a.backends {
				if backends[be.Name] {
					delete(backends, be.Name)
					f.Backends = append(f.Backends, be)
				}
			}
		}
		for _, be := range global {
			if backends[be.Name] {
				delete(backends, be.Name)
				f.Backends = append(f.Backends, be)
			}
		}
	}

	globals := map[string][]admittedLB{}
	var globalOrder []string
	f.L4 = slices.Grow(f.L4, len(lbs))
	if f.Backends == nil {
		f.Backends = make([]model.Backend, 0, len(lbs))
	}
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
		f.L4 = append(f.L4, a.services...)
		f.Backends = append(f.Backends, a.backends...)
	}
	for _, key := range globalOrder {
		members := globals[key]
		slices.SortFunc(members, func(x, y admittedLB) int { return olderLB(x.lb, y.lb) })
		svcs, bes := mergeGlobalLoadBalancers(members[0].global, members)
		f.L4 = append(f.L4, svcs...)
		f.Backends = append(f.Backends, bes...)
	}
	addGateways(f, routes, lbs)
	slices.SortFunc(f.L4, func(x, y model.L4Service) int { return cmp.Compare(x.Backend, y.Backend) })
	f.Backends = sortedByName(f.Backends)
	slices.SortFunc(f.Certificates, func(x, y model.Certificate) int { return cmp.Compare(x.Name, y.Name) })
	return f
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
