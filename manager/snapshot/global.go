package snapshot

import (
	"fmt"
	"slices"
	"strings"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/model"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// globalMember is one tenant cluster's part of a global (multi-cluster) backend.
type globalMember struct {
	groups   []model.EndpointGroup
	weight   uint32 // under the weighted strategy; 0 takes no traffic
	priority int32  // under the failover strategy; lower first
}

// memberOf reads a member's weight and priority from its global options.
func memberOf(groups []model.EndpointGroup, strategy v1.Strategy, g *v1.GlobalOptions) globalMember {
	m := globalMember{groups: groups, weight: 1}
	if g != nil && strategy == v1.StrategyWeighted && g.Weight != nil {
		m.weight = uint32(min(max(*g.Weight, 0), 1000)) // the API maximum, so sums of weights stay far from overflow
	}
	if g != nil && strategy == v1.StrategyFailover && g.Priority != nil {
		m.priority = *g.Priority
	}
	return m
}

// globalBackend fills base with every member's endpoint groups spread by the
// strategy: roundRobin (an equal share per cluster), weighted (each cluster's
// weight) or failover (Envoy priorities, renumbered contiguously from 0). A
// cluster's share is split over its zones.
func globalBackend(base model.Backend, strategy v1.Strategy, members []globalMember) model.Backend {
	var prios []int32
	for _, m := range members {
		prios = append(prios, m.priority)
	}
	slices.Sort(prios)
	prios = slices.Compact(prios)
	base.LocalityWeighted = strategy != v1.StrategyFailover
	base.Groups = nil
	for _, m := range members {
		if m.weight == 0 || len(m.groups) == 0 {
			continue
		}
		for _, g := range m.groups {
			g.Priority = uint32(slices.Index(prios, m.priority))
			if base.LocalityWeighted {
				g.Weight = max(1, m.weight*120/uint32(len(m.groups)))
			}
			base.Groups = append(base.Groups, g)
		}
	}
	return base
}

// mergeGlobalLoadBalancers joins the services of LoadBalancers that share a
// global name (admission gave them one VIP): per VIP, protocol and port one
// service to a "global/<group>/<name>/<vip>/<proto>/<port>" backend holding every
// member cluster's endpoints, with the strategy, health check and options of
// the oldest member. Members are given oldest first.
func mergeGlobalLoadBalancers(key string, members []admittedLB) ([]model.L4Service, []model.Backend) {
	oldest := members[0].lb
	strategy := v1.StrategyRoundRobin
	if g := oldest.Spec.Global; g != nil && g.Strategy != "" {
		strategy = g.Strategy
	}
	type port struct {
		svc     model.L4Service
		base    model.Backend
		members []globalMember
	}
	ports := map[string]*port{}
	var order []string
	for _, a := range members {
		backends := map[string]model.Backend{}
		for _, be := range a.backends {
			backends[be.Name] = be
		}
		for _, s := range a.services {
			pk := fmt.Sprintf("%s/%s/%d", s.VIP, strings.ToLower(string(s.Protocol)), s.Port)
			p := ports[pk]
			if p == nil {
				p = &port{svc: s, base: backends[s.Backend]}
				// The VIP too: members of one global name that ended up on two
				// addresses (two pools) are two load balancers with two names.
				p.base.Name = fmt.Sprintf("global/%s/%s/%s/%d", key, s.VIP, strings.ToLower(string(s.Protocol)), s.Port)
				p.svc.Backend = p.base.Name
				ports[pk] = p
				order = append(order, pk)
			}
			p.members = append(p.members, memberOf(backends[s.Backend].Groups, strategy, a.lb.Spec.Global))
		}
	}
	var svcs []model.L4Service
	var bes []model.Backend
	for _, pk := range order {
		p := ports[pk]
		svcs = append(svcs, p.svc)
		bes = append(bes, globalBackend(p.base, strategy, p.members))
	}
	return svcs, bes
}

// globalKey names the global load balancer a LoadBalancer joins ("" for none):
// its tenant group (or, without one, the tenant alone) and the global name.
func globalKey(t *v1.Tenant, lb *v1.LoadBalancer) string {
	if lb.Spec.Global == nil || lb.Spec.Global.Name == "" {
		return ""
	}
	return tenant.GroupKey(t) + "/" + lb.Spec.Global.Name
}
