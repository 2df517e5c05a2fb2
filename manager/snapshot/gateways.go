package snapshot

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/envoy/translate"
	"github.com/fleetlb/fleetlb/internal/model"
	"github.com/fleetlb/fleetlb/manager/route"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// A tenant Gateway is admitted as a LoadBalancer of source kind Gateway: its
// VIP comes from the tenant's pool like any LoadBalancer's, and each of its
// ports becomes a listener of the fleet on that VIP with route
// configurations of its own. Routes attach to its listeners by name
// (Route spec.parents, same namespace only), so a Route without hostnames
// matches every host on those listeners and nothing of anyone else's.

// gatewayParts is what an admitted Gateway LoadBalancer serves.
type gatewayParts struct {
	vip       netip.Addr
	listeners []gatewayListener
	certs     []model.Certificate
}

// gatewayListener is a listener the fleet can serve, with its certificate.
type gatewayListener struct {
	v1.GatewayListener
	cert string // model certificate of an HTTPS listener
}

// gatewayRoute is what a Route attached to Gateway listeners serves.
type gatewayRoute struct {
	routes []model.Route
}

func isGateway(lb *v1.LoadBalancer) bool { return lb.Spec.Source.Kind == v1.SourceGateway }

// fromGateway maps an admitted Gateway LoadBalancer onto its listeners. An
// HTTPS listener is served with the first usable certificate it names, or
// not at all; a TLS listener passes connections through by SNI.
func fromGateway(tenantName string, lb *v1.LoadBalancer, secret func(name string) *corev1.Secret) (admittedLB, error) {
	a := admittedLB{lb: lb}
	vip, err := netip.ParseAddr(string(lb.Status.Addresses[0].IP))
	if err != nil {
		return a, fmt.Errorf("address %q: %w", lb.Status.Addresses[0].IP, err)
	}
	g := &gatewayParts{vip: vip}
	for _, l := range lb.Spec.Listeners {
		gl := gatewayListener{GatewayListener: l}
		switch l.Protocol {
		case v1.ListenerHTTP:
		case v1.ListenerHTTPS:
			for _, name := range l.CertificateSecrets {
				s := secret(name)
				if s == nil {
					continue
				}
				if reason, _ := route.CheckSecret(s); reason != "" {
					continue
				}
				gl.cert = CertificateName(tenantName, lb.Namespace, name)
				if !slices.ContainsFunc(g.certs, func(c model.Certificate) bool { return c.Name == gl.cert }) {
					g.certs = append(g.certs, model.Certificate{Name: gl.cert,
						CertPEM: string(s.Data[corev1.TLSCertKey]), KeyPEM: string(s.Data[corev1.TLSPrivateKeyKey])})
				}
				break
			}
			if gl.cert == "" {
				continue
			}
		case v1.ListenerTLS:
		default:
			continue
		}
		g.listeners = append(g.listeners, gl)
	}
	a.gateway = g
	return a, nil
}

// routeServed reports whether an admitted Route has anything to serve: on
// the shared VIP its accepted hostnames, on Gateway listeners its acceptance.
func routeServed(rt *v1.Route) bool {
	if route.OnGateways(rt) {
		return rt.DeletionTimestamp.IsZero() && meta.IsStatusConditionTrue(rt.Status.Conditions, v1.ConditionAccepted)
	}
	return len(servedHostnames(rt)) > 0
}

// fromGatewayRoute maps a Route attached to Gateway listeners onto its model
// routes and backends.
func fromGatewayRoute(t *v1.Tenant, rt *v1.Route, nodes *v1.TenantNodes) admittedRoute {
	a := admittedRoute{rt: rt, tenant: refOf(t)}
	routes, backends := modelRoutes(t, rt, nodes)
	a.backends = backends
	a.gateway = &gatewayRoute{routes: routes}
	return a
}

// checkGatewayRoute says why a Gateway Route cannot be served next to its
// Gateways alone ("" when it can).
func checkGatewayRoute(fleet string, a *admittedRoute, lbs []admittedLB) (reason, msg string) {
	if len(a.gateway.routes) == 0 {
		return v1.ReasonInvalidSpec, "no rule of the route can be served"
	}
	var parents []admittedLB
	for _, lb := range lbs {
		if lb.gateway != nil && lb.lb.Namespace == a.rt.Namespace && slices.ContainsFunc(a.rt.Spec.Parents, func(p v1.RouteParent) bool { return p.LoadBalancer == lb.lb.Name }) {
			parents = append(parents, lb)
		}
	}
	if len(parents) == 0 {
		return v1.ReasonPending, "none of the route's Gateways is admitted yet"
	}
	f := &model.Fleet{Name: fleet}
	addGateways(f, []*admittedRoute{a}, parents)
	if _, err := translate.Translate(f); err != nil {
		return v1.ReasonInvalidSpec, err.Error()
	}
	return "", ""
}

// withGateway adds a Gateway LoadBalancer's listeners (no routes) to f.
func withGateway(f *model.Fleet, a admittedLB) *model.Fleet {
	if a.gateway != nil {
		addGateways(f, nil, []admittedLB{a})
	}
	return f
}

// addGateways adds to f the Gateways among lbs, with the Routes (oldest
// first) attached to their listeners, and the certificates and backends they use.
func addGateways(f *model.Fleet, routes []*admittedRoute, lbs []admittedLB) {
	if !slices.ContainsFunc(lbs, func(a admittedLB) bool { return a.gateway != nil }) {
		return // nothing to add (the fleet's other parts are sorted by whoever made them)
	}
	certs := map[string]bool{}
	for _, c := range f.Certificates {
		certs[c.Name] = true
	}
	backends := map[string]bool{}
	for _, b := range f.Backends {
		backends[b.Name] = true
	}
	var gws []admittedLB
	for _, a := range lbs {
		if a.gateway != nil {
			gws = append(gws, a)
		}
	}
	slices.SortFunc(gws, func(x, y admittedLB) int {
		return cmp.Compare(x.lb.Namespace+"/"+x.lb.Name, y.lb.Namespace+"/"+y.lb.Name)
	})
	for _, lb := range gws {
		g := lb.gateway
		if g == nil {
			continue
		}
		tenantName, _ := tenant.Of(lb.lb.Namespace)
		gw := model.Gateway{Ref: model.Ref{Tenant: tenantName, Namespace: lb.lb.Namespace, Name: lb.lb.Name}, VIP: g.vip}
		// Routes attached to each listener, oldest first.
		attached := map[string][]*admittedRoute{}
		for _, a := range routes {
			if a.gateway == nil || a.rt.Namespace != lb.lb.Namespace {
				continue
			}
			// TLSRoutes attach to TLS listeners only, the others never to them.
			if isTLS := a.rt.Spec.Source.Kind == v1.SourceTLSRoute; isTLS != (listenerProtocol(g, a.rt.Spec.Parents, lb.lb.Name) == v1.ListenerTLS) {
				continue
			}
			for _, p := range a.rt.Spec.Parents {
				if p.LoadBalancer != lb.lb.Name {
					continue
				}
				for _, l := range p.Listeners {
					attached[l] = append(attached[l], a)
				}
			}
		}
		used := map[*admittedRoute]bool{}
		// Listeners by port, in spec order; a port serves the protocol of
		// its first listener (the ccm reports the others as conflicted).
		var ports []uint16
		byPort := map[uint16][]gatewayListener{}
		for _, l := range g.listeners {
			p := uint16(l.Port)
			if byPort[p] == nil {
				ports = append(ports, p)
			} else if byPort[p][0].Protocol != l.Protocol {
				continue
			}
			byPort[p] = append(byPort[p], l)
		}
		for _, p := range ports {
			ls := byPort[p]
			gp := model.GatewayPort{Port: p, Protocol: model.ListenerProtocol(ls[0].Protocol)}
			switch ls[0].Protocol {
			case v1.ListenerHTTP:
				gp.VirtualHosts = gatewayVirtualHosts(ls, ls, attached, used)
			case v1.ListenerTLS:
				gp.Passthrough = passthroughRoutes(ls, attached, used)
				if len(gp.Passthrough) == 0 {
					continue // Envoy needs a filter chain: a TLS port without routes is not opened
				}
			case v1.ListenerHTTPS:
				sni := map[v1.Hostname]bool{}
				for _, l := range ls {
					if sni[l.Hostname] {
						continue // the ccm reports it as conflicted
					}
					sni[l.Hostname] = true
					gp.Listeners = append(gp.Listeners, model.GatewayTLSListener{Name: l.Name, Hostname: string(l.Hostname), Certificate: l.cert,
						VirtualHosts: gatewayVirtualHosts([]gatewayListener{l}, ls, attached, used)})
					if !certs[l.cert] {
						certs[l.cert] = true
						i := slices.IndexFunc(g.certs, func(c model.Certificate) bool { return c.Name == l.cert })
						f.Certificates = append(f.Certificates, g.certs[i])
					}
				}
			}
			gw.Ports = append(gw.Ports, gp)
		}
		if len(gw.Ports) == 0 {
			continue // nothing the fleet can serve: no listener
		}
		f.Gateways = append(f.Gateways, gw)
		for _, a := range routes {
			if !used[a] {
				continue
			}
			for _, be := range a.backends {
				if !backends[be.Name] {
					backends[be.Name] = true
					f.Backends = append(f.Backends, be)
				}
			}
		}
	}
	slices.SortFunc(f.Backends, func(x, y model.Backend) int { return cmp.Compare(x.Name, y.Name) })
	slices.SortFunc(f.Certificates, func(x, y model.Certificate) int { return cmp.Compare(x.Name, y.Name) })
}

// gatewayVirtualHosts is one route configuration: for each listener of ls,
// a virtual host for its hostname ("*" without one), and one for each
// hostname where an attached Route's hostnames narrow it. A request goes to
// the most specific listener whose hostname matches (of all of the port's
// listeners, port), and only that listener's Routes serve it; a hostname no
// Route serves answers 404.
func gatewayVirtualHosts(ls, port []gatewayListener, attached map[string][]*admittedRoute, used map[*admittedRoute]bool) []model.VirtualHost {
	byHost := map[string]*model.VirtualHost{}
	var order []string
	vhost := func(h string) *model.VirtualHost {
		if v := byHost[h]; v != nil {
			return v
		}
		byHost[h] = &model.VirtualHost{Name: h, Hostnames: []string{h}}
		order = append(order, h)
		return byHost[h]
	}
	for _, l := range ls {
		lh := cmp.Or(string(l.Hostname), "*")
		vhost(lh)
		for _, a := range attached[l.Name] {
			var hosts []string
			if len(a.rt.Spec.Hostnames) == 0 {
				hosts = []string{lh}
			}
			for _, rh := range a.rt.Spec.Hostnames {
				if h := intersectHostname(string(l.Hostname), string(rh)); h != "" && !slices.Contains(hosts, h) {
					hosts = append(hosts, h)
				}
			}
			for _, h := range hosts {
				if bestListener(port, h) != l.Name {
					continue // a more specific listener of the port takes this host
				}
				v := vhost(h)
				v.Routes = append(v.Routes, redirectPorts(a.gateway.routes, uint16(l.Port))...)
				used[a] = true
			}
		}
	}
	out := make([]model.VirtualHost, 0, len(order))
	for _, h := range order {
		v := byHost[h]
		slices.SortStableFunc(v.Routes, precedence)
		out = append(out, *v)
	}
	slices.SortFunc(out, func(a, b model.VirtualHost) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// redirectPorts gives every redirect without a port the one the Gateway API
// wants (the scheme's well-known port, else the listener's) instead of
// leaving it to the request's Host header, which a client may send without
// a port and which a redirect hostname replaces. Routes are copied: the same
// route serves listeners on other ports.
func redirectPorts(routes []model.Route, listenerPort uint16) []model.Route {
	out := slices.Clone(routes)
	for i, r := range out {
		if r.Redirect == nil || r.Redirect.Port != 0 {
			continue
		}
		rd := *r.Redirect
		switch rd.Scheme {
		case "http":
			rd.Port = 80
		case "https":
			rd.Port = 443
		default:
			rd.Port = listenerPort
		}
		out[i].Redirect = &rd
	}
	return out
}

// intersectHostname is what a listener hostname (none: any) and a route
// hostname have in common, as the Gateway API defines it; "" when nothing.
func intersectHostname(listener, rt string) string {
	switch {
	case listener == "" || listener == rt:
		return rt
	case strings.HasPrefix(listener, "*.") && strings.HasSuffix(rt, listener[1:]):
		return rt // rt is a name or a narrower wildcard under the listener's
	case strings.HasPrefix(rt, "*.") && strings.HasSuffix(listener, rt[1:]):
		return listener
	}
	return ""
}

// bestListener is the listener of a port a request for host h reaches: an
// exact hostname, else the longest wildcard covering h, else one without a
// hostname (first in spec order on a tie).
func bestListener(port []gatewayListener, h string) string {
	best, score := "", -1
	for _, l := range port {
		lh, s := string(l.Hostname), -1
		switch {
		case lh == "":
			s = 0
		case lh == h:
			s = 1 << 20
		case strings.HasPrefix(lh, "*.") && strings.HasSuffix(h, lh[1:]) && h != "*":
			s = len(lh)
		}
		if s > score {
			best, score = l.Name, s
		}
	}
	return best
}

// listenerProtocol is the protocol of the listeners a route's parents name
// on one Gateway ("" when none is served): the ccm attaches a route only to
// listeners of its kind, so they agree.
func listenerProtocol(g *gatewayParts, parents []v1.RouteParent, lb string) v1.ListenerProtocol {
	for _, p := range parents {
		if p.LoadBalancer != lb {
			continue
		}
		for _, l := range g.listeners {
			if slices.Contains(p.Listeners, l.Name) {
				return l.Protocol
			}
		}
	}
	return ""
}

// passthroughRoutes are a TLS port's filter chains: for each listener, the
// server names its TLSRoutes (oldest first) take — the route's hostnames
// narrowed to the listener's, or the listener's own (none: every name) —
// each to the first backend of the route's first rule. A name goes to the
// most specific listener of the port and, there, to the oldest route.
func passthroughRoutes(port []gatewayListener, attached map[string][]*admittedRoute, used map[*admittedRoute]bool) []model.PassthroughRoute {
	taken := map[string]bool{}
	var out []model.PassthroughRoute
	for _, l := range port {
		for _, a := range attached[l.Name] {
			backend := ""
			for _, r := range a.gateway.routes {
				if r.Forward != nil && len(r.Forward.Backends) > 0 {
					backend = r.Forward.Backends[0].Backend
					break
				}
			}
			if backend == "" {
				continue
			}
			var hosts []string
			if len(a.rt.Spec.Hostnames) == 0 {
				hosts = []string{cmp.Or(string(l.Hostname), "*")}
			}
			for _, rh := range a.rt.Spec.Hostnames {
				if h := intersectHostname(string(l.Hostname), string(rh)); h != "" && !slices.Contains(hosts, h) {
					hosts = append(hosts, h)
				}
			}
			pr := model.PassthroughRoute{Name: a.rt.Name + "/" + l.Name, Backend: backend}
			anyName := false
			for _, h := range hosts {
				if taken[h] || bestListener(port, h) != l.Name {
					continue
				}
				taken[h] = true
				if h == "*" {
					anyName = true
				} else {
					pr.Hostnames = append(pr.Hostnames, h)
				}
			}
			if anyName {
				// The catch-all chain has no server names; names of this
				// route go to it as well.
				out = append(out, model.PassthroughRoute{Name: pr.Name, Backend: backend})
				used[a] = true
				continue
			}
			if len(pr.Hostnames) > 0 {
				out = append(out, pr)
				used[a] = true
			}
		}
	}
	return out
}
