package model

import (
	"fmt"
	"net/netip"
)

// ListenerProtocol is what a port of a Gateway serves.
type ListenerProtocol string

const (
	ListenerHTTP  ListenerProtocol = "HTTP"
	ListenerHTTPS ListenerProtocol = "HTTPS"
	// ListenerTLS passes TLS connections through, undecrypted, by SNI.
	ListenerTLS ListenerProtocol = "TLS"
)

// Gateway is a tenant Gateway served on its own VIP: every port of it is a
// listener of the fleet with its own route configurations, so a route
// without hostnames (domain "*") sees only this Gateway's traffic.
type Gateway struct {
	// Ref is the management object the Gateway was admitted as; listener and
	// route configuration names derive from it.
	Ref Ref        `json:"ref"`
	VIP netip.Addr `json:"vip"`
	// Ports of the VIP, each one Envoy listener.
	Ports []GatewayPort `json:"ports"`
}

// GatewayPort is one port of a Gateway and what it serves.
type GatewayPort struct {
	Port     uint16           `json:"port"`
	Protocol ListenerProtocol `json:"protocol"`
	// VirtualHosts of an HTTP port (one route configuration; the Gateway
	// listeners on the port share it, each contributing its hostnames).
	// Domains are DNS names, "*.suffix" wildcards or "*" (every host).
	VirtualHosts []VirtualHost `json:"virtualHosts,omitempty"`
	// Listeners of an HTTPS port: one filter chain each, chosen by SNI.
	Listeners []GatewayTLSListener `json:"listeners,omitempty"`
	// Passthrough routes of a TLS port: one filter chain each, chosen by SNI.
	Passthrough []PassthroughRoute `json:"passthrough,omitempty"`
}

// PassthroughRoute sends TLS connections whose SNI matches Hostnames (none:
// every name no other route of the port matches) to a TCP backend, undecrypted.
type PassthroughRoute struct {
	Name      string   `json:"name"`
	Hostnames []string `json:"hostnames,omitempty"`
	Backend   string   `json:"backend"`
}

// GatewayTLSListener is one HTTPS listener of a Gateway: a certificate for
// the SNI Hostname ("" matches any) and its own route configuration.
type GatewayTLSListener struct {
	// Name is the Gateway listener's name, unique on the Gateway.
	Name        string `json:"name"`
	Hostname    string `json:"hostname,omitempty"`
	Certificate string `json:"certificate"`
	// VirtualHosts as on an HTTP port; Certificate of each is empty.
	VirtualHosts []VirtualHost `json:"virtualHosts,omitempty"`
}

// validateGateways checks the fleet's Gateways: each port one protocol,
// names and SNI unique where Envoy needs them, domains unique per route
// configuration, and no VIP:port another listener of the fleet has.
func (f *Fleet) validateGateways(backends map[string]*Backend, certs map[string]bool, e *errs) {
	type key struct {
		vip  netip.Addr
		port uint16
	}
	taken := map[key]string{}
	for i, s := range f.L4 {
		if s.Protocol == TCP {
			taken[key{s.VIP, s.Port}] = fmt.Sprintf("l4[%d]", i)
		}
	}
	for i, l := range []*SharedListener{f.HTTP, f.HTTPS} {
		if l != nil {
			taken[key{l.VIP, l.Port}] = []string{"the fleet's shared HTTP listener", "the fleet's shared HTTPS listener"}[i]
		}
	}
	for i := range f.Gateways {
		g := &f.Gateways[i]
		p := fmt.Sprintf("gateways[%d]", i)
		if why := checkAddr(g.VIP); why != "" {
			e.add(p+".vip", "%s", why)
		}
		for _, t := range []string{g.Ref.Tenant, g.Ref.Namespace, g.Ref.Name} {
			if t == "" {
				e.add(p+".ref", "must name tenant, namespace and name")
			} else if why := checkText(t); why != "" {
				e.add(p+".ref", "%q %s", t, why)
			}
		}
		if len(g.Ports) == 0 {
			e.add(p+".ports", "must not be empty")
		}
		for j := range g.Ports {
			gp := &g.Ports[j]
			pp := fmt.Sprintf("%s.ports[%d]", p, j)
			if gp.Port == 0 {
				e.add(pp+".port", "must be 1-65535")
			}
			k := key{g.VIP, gp.Port}
			if other, dup := taken[k]; dup {
				e.add(pp, "%s:%d is also %s", g.VIP, gp.Port, other)
			}
			taken[k] = pp
			switch gp.Protocol {
			case ListenerHTTP:
				if len(gp.Listeners) > 0 {
					e.add(pp+".listeners", "an HTTP port has no TLS listeners")
				}
				validateVirtualHosts(pp, gp.VirtualHosts, backends, e)
			case ListenerHTTPS:
				if len(gp.VirtualHosts) > 0 {
					e.add(pp+".virtualHosts", "an HTTPS port has its virtual hosts in its listeners")
				}
				if len(gp.Listeners) == 0 {
					e.add(pp+".listeners", "an HTTPS port needs a listener with a certificate")
				}
				names, sni := map[string]bool{}, map[string]string{}
				for n := range gp.Listeners {
					tl := &gp.Listeners[n]
					lp := fmt.Sprintf("%s.listeners[%d]", pp, n)
					if tl.Name == "" || names[tl.Name] || checkText(tl.Name) != "" {
						e.add(lp+".name", "must be unique, printable and not empty: %q", tl.Name)
					}
					names[tl.Name] = true
					if tl.Hostname != "" && !ValidHostname(tl.Hostname) {
						e.add(lp+".hostname", "%q is not a DNS name or *.suffix wildcard", tl.Hostname)
					}
					if other, dup := sni[tl.Hostname]; dup {
						e.add(lp+".hostname", "server name %q is also matched by listener %q", tl.Hostname, other)
					}
					sni[tl.Hostname] = tl.Name
					if !certs[tl.Certificate] {
						e.add(lp+".certificate", "unknown certificate %q", tl.Certificate)
					}
					validateVirtualHosts(lp, tl.VirtualHosts, backends, e)
				}
			case ListenerTLS:
				if len(gp.VirtualHosts) > 0 || len(gp.Listeners) > 0 {
					e.add(pp, "a TLS port has passthrough routes only")
				}
				if len(gp.Passthrough) == 0 {
					e.add(pp+".passthrough", "must not be empty")
				}
				names, sni := map[string]bool{}, map[string]string{}
				for n := range gp.Passthrough {
					r := &gp.Passthrough[n]
					rp := fmt.Sprintf("%s.passthrough[%d]", pp, n)
					if r.Name == "" || names[r.Name] || checkText(r.Name) != "" {
						e.add(rp+".name", "must be unique, printable and not empty: %q", r.Name)
					}
					names[r.Name] = true
					hosts := r.Hostnames
					if len(hosts) == 0 {
						hosts = []string{""}
					}
					for _, h := range hosts {
						if h != "" && !ValidHostname(h) {
							e.add(rp+".hostnames", "%q is not a DNS name or *.suffix wildcard", h)
						}
						if other, dup := sni[h]; dup {
							e.add(rp+".hostnames", "server name %q is also matched by %q", h, other)
						}
						sni[h] = r.Name
					}
					switch b, ok := backends[r.Backend]; {
					case !ok:
						e.add(rp+".backend", "unknown backend %q", r.Backend)
					case b.Protocol != BackendTCP:
						e.add(rp+".backend", "a passthrough route needs a TCP backend, %q is %s", r.Backend, b.Protocol)
					}
				}
			default:
				e.add(pp+".protocol", "must be HTTP, HTTPS or TLS, not %q", gp.Protocol)
			}
		}
	}
}

// validateVirtualHosts checks the virtual hosts of one Gateway route
// configuration: unique names and domains, each a DNS name, a wildcard or "*".
func validateVirtualHosts(p string, vhosts []VirtualHost, backends map[string]*Backend, e *errs) {
	names, domains := map[string]bool{}, map[string]string{}
	for i := range vhosts {
		v := &vhosts[i]
		vp := fmt.Sprintf("%s.virtualHosts[%d]", p, i)
		if v.Name == "" || names[v.Name] || checkText(v.Name) != "" {
			e.add(vp+".name", "must be unique, printable and not empty: %q", v.Name)
		}
		names[v.Name] = true
		if len(v.Hostnames) == 0 {
			e.add(vp+".hostnames", "must not be empty")
		}
		for j, h := range v.Hostnames {
			if h != "*" && !ValidHostname(h) {
				e.add(fmt.Sprintf("%s.hostnames[%d]", vp, j), "%q is not a DNS name, *.suffix wildcard or *", h)
			}
			if other, dup := domains[h]; dup {
				e.add(fmt.Sprintf("%s.hostnames[%d]", vp, j), "%q is also served by virtual host %q", h, other)
			}
			domains[h] = v.Name
		}
		if v.Certificate != "" || v.RedirectToHTTPS {
			e.add(vp, "a Gateway virtual host takes its certificate from its listener")
		}
		// No routes: the host is the listener's, and answers 404.
		rnames := map[string]bool{}
		for j := range v.Routes {
			r := &v.Routes[j]
			rp := fmt.Sprintf("%s.routes[%d]", vp, j)
			if r.Name == "" || rnames[r.Name] || checkText(r.Name) != "" {
				e.add(rp+".name", "must be unique, printable and not empty: %q", r.Name)
			}
			rnames[r.Name] = true
			r.validate(rp, backends, e)
		}
	}
}
