package snapshot

import (
	"cmp"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/model"
	"github.com/fleetlb/fleetlb/manager/route"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// admittedRoute is one Route and the model parts made from it.
type admittedRoute struct {
	rt     *v1.Route
	tenant tenantRef
	hosts  []hostPart
	// backends and certs are those the hosts use, each once.
	backends []model.Backend
	certs    []model.Certificate
	gateway  *gatewayRoute // a Route on Gateway listeners (gateways.go)
}

// hostPart is what one Route serves for one of its accepted hostnames.
type hostPart struct {
	hostname string
	cert     string // name of a model.Certificate, "" for HTTP only
	redirect bool   // plain HTTP answers with a redirect to https (with cert only)
	routes   []model.Route
}

// servedHostnames are the Route's accepted hostnames that are still in its spec
// (status may lag behind a spec change; a new hostname waits for admission).
func servedHostnames(rt *v1.Route) []v1.Hostname {
	if !rt.DeletionTimestamp.IsZero() || !meta.IsStatusConditionTrue(rt.Status.Conditions, v1.ConditionAccepted) {
		return nil
	}
	var out []v1.Hostname
	for _, h := range rt.Status.AcceptedHostnames {
		if slices.Contains(rt.Spec.Hostnames, h) && !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}

// RouteBackendName is the stable, readable Envoy cluster name of one Route
// backend: tenant, Route, protocol and node port. It comes from the management
// object's identity, never from names the tenant wrote in its spec, so it
// cannot collide with another object's.
func RouteBackendName(tenantName, routeName string, b v1.RouteBackend) string {
	return fmt.Sprintf("%s/%s/%s/%d", tenantName, routeName, strings.ToLower(string(cmp.Or(b.Protocol, v1.BackendHTTP))), b.NodePort)
}

// CertificateName is the model name of a tenant's TLS Secret.
func CertificateName(tenantName, namespace, secret string) string {
	return fmt.Sprintf("%s/%s/%s", tenantName, namespace, secret)
}

// tenantRef is what of a Tenant a Route's parts keep: its name and group
// (tenant.GroupKey). A part outlives the reconcile that made it, and a whole
// Tenant (hostname claims and all) would be kept once for every reconcile
// that made a part.
type tenantRef struct{ Name, group string }

func refOf(t *v1.Tenant) tenantRef { return tenantRef{Name: t.Name, group: tenant.GroupKey(t)} }

// fromRoute maps an admitted Route onto model virtual-host parts, backends
// and certificates. Rules admission reported as unusable are left out;
// hostnames whose TLS Secret is unusable are served over plain HTTP.
// secret returns a Secret of the Route's namespace, or nil.
func fromRoute(t *v1.Tenant, rt *v1.Route, nodes *v1.TenantNodes, secret func(name string) *corev1.Secret) admittedRoute {
	a := admittedRoute{rt: rt, tenant: refOf(t)}
	hostnames := servedHostnames(rt)
	if len(hostnames) == 0 {
		return a
	}
	routes, backends := modelRoutes(t, rt, nodes)
	a.backends = backends
	if len(routes) == 0 {
		return a
	}
	seenCert := map[string]bool{}
	for _, h := range hostnames {
		hp := hostPart{hostname: string(h), routes: routes}
		for _, tl := range rt.Spec.TLS {
			if !route.CoveredBy(tl.Hostnames, h) {
				continue
			}
			s := secret(tl.SecretName)
			if s == nil {
				continue
			}
			if reason, _ := route.CheckSecret(s); reason != "" {
				continue
			}
			hp.cert = CertificateName(t.Name, rt.Namespace, tl.SecretName)
			hp.redirect = tl.RedirectHTTP
			if !seenCert[hp.cert] {
				seenCert[hp.cert] = true
				a.certs = append(a.certs, model.Certificate{Name: hp.cert,
					CertPEM: string(s.Data[corev1.TLSCertKey]), KeyPEM: string(s.Data[corev1.TLSPrivateKeyKey])})
			}
			break
		}
		a.hosts = append(a.hosts, hp)
	}
	return a
}

// modelRoutes are the model routes of a Route's usable rules, in rule and
// match order, and the backends they forward to, each once. Rules admission
// reported as unusable are left out.
func modelRoutes(t *v1.Tenant, rt *v1.Route, nodes *v1.TenantNodes) ([]model.Route, []model.Backend) {
	var backends []model.Backend
	cluster := cmp.Or(nodes.Spec.Cluster, rt.Spec.Source.Cluster)
	seenBackend := map[string]bool{}
	var routes []model.Route
	for i := range rt.Spec.Rules {
		rule := &rt.Spec.Rules[i]
		reason, _ := route.CheckRuleFor(t, rule)
		// On Gateway listeners a rule without a usable backend answers 500
		// (Gateway API); elsewhere it is left out.
		failed := reason == v1.ReasonInvalidBackend && route.OnGateways(rt)
		if reason != "" && !failed {
			continue
		}
		redirect, fw := route.RuleAction(rule)
		if fw != nil && !failed {
			for _, rb := range rule.Backends {
				if route.Weight(rb) == 0 {
					continue
				}
				name := RouteBackendName(t.Name, rt.Name, rb)
				fw.Backends = append(fw.Backends, model.WeightedBackend{Backend: name, Weight: uint32(route.Weight(rb))})
				if !seenBackend[name] {
					seenBackend[name] = true
					backends = append(backends, routeBackend(name, cluster, rb, nodes))
				}
			}
		}
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []v1.RouteMatch{{}}
		}
		for j := range matches {
			mr := model.Route{Name: fmt.Sprintf("%s/%s/%d/%d", t.Name, rt.Name, i, j), Match: route.ModelMatch(&matches[j])}
			switch {
			case failed:
				mr.Respond = &model.Respond{Status: 500}
			case redirect != nil:
				rd := *redirect
				mr.Redirect = &rd
			default:
				f := *fw
				mr.Forward = &f
			}
			routes = append(routes, mr)
		}
	}
	return routes, backends
}

// precedence orders the routes of one virtual host as Gateway API does:
// an exact path before a regular expression before a prefix, a longer path
// first, then a method, more headers, more query parameters; ties keep their
// order (older Route first, then rule and match order).
func precedence(a, b model.Route) int {
	rank := func(m model.Match) int {
		switch m.PathType {
		case model.PathExact:
			return 0
		case model.PathRegex:
			return 1
		}
		return 2
	}
	ma, mb := a.Match, b.Match
	hasMethod := func(m model.Match) int {
		if m.Method != "" {
			return 0
		}
		return 1
	}
	return cmp.Or(
		cmp.Compare(rank(ma), rank(mb)),
		cmp.Compare(len(mb.Path), len(ma.Path)),
		cmp.Compare(hasMethod(ma), hasMethod(mb)),
		cmp.Compare(len(mb.Headers), len(ma.Headers)),
		cmp.Compare(len(mb.Query), len(ma.Query)),
	)
}

func routeBackend(name, cluster string, rb v1.RouteBackend, nodes *v1.TenantNodes) model.Backend {
	proto := model.BackendHTTP1
	switch rb.Protocol {
	case v1.BackendHTTP2:
		proto = model.BackendHTTP2
	case v1.BackendGRPC:
		proto = model.BackendGRPC
	case v1.BackendTCP:
		proto = model.BackendTCP // a TLSRoute's: TLS passed through
	}
	return model.Backend{Name: name, Protocol: proto, Groups: endpointGroups(cluster, nodes, uint16(rb.NodePort)),
		HealthCheck: &model.HealthCheck{Type: model.HealthTCP}}
}

// endpointGroups are the tenant's node addresses × port, one group per zone.
func endpointGroups(cluster string, nodes *v1.TenantNodes, port uint16) []model.EndpointGroup {
	byZone := map[string][]model.Endpoint{}
	for _, n := range nodes.Spec.Nodes {
		for _, addr := range n.Addresses {
			if ip, err := netip.ParseAddr(string(addr)); err == nil {
				byZone[n.Zone] = append(byZone[n.Zone], model.Endpoint{Address: ip, Port: port})
			}
		}
	}
	var groups []model.EndpointGroup
	for _, zone := range slices.Sorted(mapKeys(byZone)) {
		groups = append(groups, model.EndpointGroup{Cluster: cluster, Zone: zone, Endpoints: byZone[zone]})
	}
	return groups
}

// sharedListeners are the fleet's HTTP and HTTPS listeners on its VIP, or an
// explanation why it has none.
func sharedListeners(pf *v1.ProxyFleet) (httpL, httpsL *model.SharedListener, why string) {
	if pf == nil {
		return nil, nil, "the fleet's ProxyFleet does not exist"
	}
	addrs := route.FleetAddresses(pf)
	if len(addrs) == 0 {
		return nil, nil, "fleet " + pf.Name + " has no address for its HTTP/HTTPS listeners yet"
	}
	vip, err := netip.ParseAddr(string(addrs[0].IP))
	if err != nil {
		return nil, nil, fmt.Sprintf("fleet %s address %q: %v", pf.Name, addrs[0].IP, err)
	}
	if pf.Spec.HTTP != nil {
		httpL = &model.SharedListener{VIP: vip, Port: uint16(pf.Spec.HTTP.Port)}
	}
	if pf.Spec.HTTPS != nil {
		httpsL = &model.SharedListener{VIP: vip, Port: uint16(pf.Spec.HTTPS.Port)}
	}
	if httpL == nil && httpsL == nil {
		return nil, nil, "fleet " + pf.Name + " has neither an HTTP nor an HTTPS listener"
	}
	return httpL, httpsL, ""
}

// virtualHosts merges host parts (of Routes in oldest-first order) into one
// virtual host per hostname. A hostname already served for a tenant outside
// the group of the tenant that claimed it first is skipped (admission refuses
// such claims; this keeps the fleet consistent while status catches up).
// Parts that cannot be served on the fleet's listeners are dropped.
//
// Tenants of one group that serve the same hostname with the same match are
// one global load balancer: their routes become one route, forwarding to a
// global backend whose endpoint groups are every cluster's (see mergeGlobal).
// The global backends are returned with the virtual hosts.
func virtualHosts(parts []*admittedRoute, httpL, httpsL *model.SharedListener) ([]model.VirtualHost, []model.Backend) {
	byHost := map[string]*vhostAcc{}
	for _, a := range parts {
		for i := range a.hosts {
			hp := &a.hosts[i]
			x := byHost[hp.hostname]
			if x == nil {
				x = &vhostAcc{}
				byHost[hp.hostname] = x
			}
			x.add(a, hp, httpL, httpsL)
		}
	}
	out := make([]model.VirtualHost, 0, len(byHost))
	var global []model.Backend
	// Only hostnames served by several tenants look backends up: the map is
	// made on first use.
	backend := backendsOf(parts)
	for _, h := range slices.Sorted(mapKeys(byHost)) {
		vh, extra, ok := byHost[h].finish(h, backend)
		if !ok {
			continue
		}
		global = append(global, extra...)
		out = append(out, vh)
	}
	return out, global
}

// virtualHostOf is what virtualHosts makes of parts for one hostname (the
// parts that have a host part for it, oldest first): its virtual host (ok
// false for none) and the global backends it made.
func virtualHostOf(host string, parts []*admittedRoute, httpL, httpsL *model.SharedListener) (model.VirtualHost, []model.Backend, bool) {
	x := &vhostAcc{}
	for _, a := range parts {
		for i := range a.hosts {
			if a.hosts[i].hostname == host {
				x.add(a, &a.hosts[i], httpL, httpsL)
			}
		}
	}
	return x.finish(host, backendsOf(parts))
}

// backendsOf looks the backends of parts up by name (the map is made on first use).
func backendsOf(parts []*admittedRoute) func(string) *model.Backend {
	var backends map[string]*model.Backend
	return func(name string) *model.Backend {
		if backends == nil {
			backends = map[string]*model.Backend{}
			for _, a := range parts {
				for i := range a.backends {
					backends[a.backends[i].Name] = &a.backends[i]
				}
			}
		}
		return backends[name]
	}
}

// vhostAcc gathers the host parts of one hostname, oldest Route first.
type vhostAcc struct {
	started bool
	owner   tenantRef
	vh      model.VirtualHost
	origins []*admittedRoute // of each route in vh.Routes
}

func (x *vhostAcc) add(a *admittedRoute, hp *hostPart, httpL, httpsL *model.SharedListener) {
	cert := hp.cert
	if httpsL == nil {
		cert = ""
	}
	if cert == "" && httpL == nil {
		return
	}
	if !x.started {
		x.started, x.owner, x.vh = true, a.tenant, model.VirtualHost{Name: hp.hostname, Hostnames: []string{hp.hostname}}
	} else if x.owner.group != a.tenant.group {
		return
	}
	if x.vh.Certificate == "" {
		x.vh.Certificate = cert
		x.vh.RedirectToHTTPS = cert != "" && hp.redirect
	}
	x.vh.Routes = append(x.vh.Routes, hp.routes...)
	for range hp.routes {
		x.origins = append(x.origins, a)
	}
}

func (x *vhostAcc) finish(h string, backend func(string) *model.Backend) (model.VirtualHost, []model.Backend, bool) {
	if !x.started {
		return model.VirtualHost{}, nil, false
	}
	routes, extra := mergeGlobal(h, x.vh.Routes, x.origins, backend)
	x.vh.Routes = routes
	slices.SortStableFunc(x.vh.Routes, precedence)
	return x.vh, extra, true
}

// mergeGlobal joins routes of different tenants with the same match into
// the oldest one. When each forwards to one backend of the same protocol, the
// joined route forwards to a new backend "global/<hostname>/<route>" that
// holds every cluster's endpoint groups, spread by the strategy of the oldest
// Route's global options: roundRobin (an equal share per cluster), weighted
// (each Route's global weight per cluster; 0 takes no traffic) or failover
// (each Route's global priority, lower first, as Envoy priorities). Otherwise
// the joined route forwards to all their backends, each cluster's share set
// by the strategy's weights (failover is then approximated by round robin).
func mergeGlobal(host string, routes []model.Route, origins []*admittedRoute, backend func(string) *model.Backend) ([]model.Route, []model.Backend) {
	if !slices.ContainsFunc(origins, func(a *admittedRoute) bool { return a.tenant.Name != origins[0].tenant.Name }) {
		return routes, nil // one tenant: nothing to join
	}
	used := make([]bool, len(routes))
	var out []model.Route
	var extra []model.Backend
	for i := range routes {
		if used[i] {
			continue
		}
		used[i] = true
		same := []int{i}
		if routes[i].Forward != nil && i+1 < len(routes) {
			tenants := []string{origins[i].tenant.Name}
			for j := i + 1; j < len(routes); j++ {
				if !used[j] && routes[j].Forward != nil && !slices.Contains(tenants, origins[j].tenant.Name) && reflect.DeepEqual(routes[i].Match, routes[j].Match) {
					used[j] = true
					tenants = append(tenants, origins[j].tenant.Name)
					same = append(same, j)
				}
			}
		}
		if len(same) == 1 {
			out = append(out, routes[i])
			continue
		}
		strategy := v1.StrategyRoundRobin
		if g := origins[i].rt.Spec.Global; g != nil && g.Strategy != "" {
			strategy = g.Strategy
		}
		weight := func(a *admittedRoute) uint32 { return memberOf(nil, strategy, a.rt.Spec.Global).weight }
		fw := *routes[i].Forward
		joined := routes[i]
		joined.Forward = &fw

		single := true
		var proto model.BackendProtocol
		for n, k := range same {
			wbs := routes[k].Forward.Backends
			if len(wbs) != 1 || backend(wbs[0].Backend) == nil || (n > 0 && backend(wbs[0].Backend).Protocol != proto) {
				single = false
				break
			}
			proto = backend(wbs[0].Backend).Protocol
		}
		if single {
			var members []globalMember
			for _, k := range same {
				members = append(members, memberOf(backend(routes[k].Forward.Backends[0].Backend).Groups, strategy, origins[k].rt.Spec.Global))
			}
			gb := globalBackend(model.Backend{Name: "global/" + host + "/" + routes[i].Name, Protocol: proto,
				HealthCheck: &model.HealthCheck{Type: model.HealthTCP}}, strategy, members)
			joined.Forward.Backends = []model.WeightedBackend{{Backend: gb.Name, Weight: 1}}
			extra = append(extra, gb)
			out = append(out, joined)
			continue
		}
		joined.Forward.Backends = nil
		for _, k := range same {
			total := uint64(0)
			for _, wb := range routes[k].Forward.Backends {
				total += uint64(wb.Weight)
			}
			w := uint64(weight(origins[k]))
			for _, wb := range routes[k].Forward.Backends {
				if share := uint64(wb.Weight) * w * 1000 / max(total, 1); share > 0 {
					joined.Forward.Backends = append(joined.Forward.Backends, model.WeightedBackend{Backend: wb.Backend, Weight: uint32(share)})
				}
			}
		}
		if len(joined.Forward.Backends) == 0 {
			joined.Forward.Backends = routes[i].Forward.Backends
		}
		out = append(out, joined)
	}
	return out, extra
}
