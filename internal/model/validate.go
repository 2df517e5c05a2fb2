package model

import (
	"crypto/tls"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

var (
	dnsLabel  = `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
	hostnameR = regexp.MustCompile(`^(\*\.)?` + dnsLabel + `(\.` + dnsLabel + `)*$`)
	tokenR    = regexp.MustCompile("^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
)

// ValidHostname reports whether h is a lower-case DNS name or a "*.suffix" wildcard.
func ValidHostname(h string) bool { return len(h) <= 253 && hostnameR.MatchString(h) }

type errs struct{ list []error }

func (e *errs) add(path, format string, args ...any) {
	e.list = append(e.list, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
}

// Validate checks the whole fleet and returns every problem found, each
// prefixed with its field path, joined with errors.Join.
func (f *Fleet) Validate() error {
	var e errs
	if f.Name == "" {
		e.add("name", "must not be empty")
	}
	backends := map[string]*Backend{}
	for i := range f.Backends {
		b := &f.Backends[i]
		p := fmt.Sprintf("backends[%d]", i)
		if _, dup := backends[b.Name]; dup {
			e.add(p+".name", "duplicate backend %q", b.Name)
		}
		backends[b.Name] = b
		b.validate(p, &e)
	}

	type l4key struct {
		vip  string
		port uint16
		prot Protocol
	}
	seen := map[l4key]int{}
	for i, s := range f.L4 {
		p := fmt.Sprintf("l4[%d]", i)
		if !s.VIP.IsValid() {
			e.add(p+".vip", "must be an IP address")
		}
		if s.Port == 0 {
			e.add(p+".port", "must be 1-65535")
		}
		if s.Protocol != TCP && s.Protocol != UDP {
			e.add(p+".protocol", "must be TCP or UDP, not %q", s.Protocol)
		}
		k := l4key{s.VIP.String(), s.Port, s.Protocol}
		if j, dup := seen[k]; dup {
			e.add(p, "%s %s:%d is also l4[%d]", s.Protocol, s.VIP, s.Port, j)
		}
		seen[k] = i
		for _, shared := range []*SharedListener{f.HTTP, f.HTTPS} {
			if shared != nil && s.Protocol == TCP && shared.VIP == s.VIP && shared.Port == s.Port {
				e.add(p, "TCP %s:%d is the fleet's shared HTTP/HTTPS listener", s.VIP, s.Port)
			}
		}
		b, ok := backends[s.Backend]
		switch {
		case !ok:
			e.add(p+".backend", "unknown backend %q", s.Backend)
		case s.Protocol == UDP && b.Protocol != BackendUDP, s.Protocol == TCP && b.Protocol == BackendUDP:
			e.add(p+".backend", "%s service cannot use %s backend %q", s.Protocol, b.Protocol, s.Backend)
		}
		for j, r := range s.SourceRanges {
			if !r.IsValid() {
				e.add(fmt.Sprintf("%s.sourceRanges[%d]", p, j), "must be a CIDR")
			}
		}
	}
	for i, l := range []*SharedListener{f.HTTP, f.HTTPS} {
		if l != nil && (!l.VIP.IsValid() || l.Port == 0) {
			e.add([]string{"http", "https"}[i], "needs a VIP and a port")
		}
	}
	if f.HTTP != nil && f.HTTPS != nil && f.HTTP.VIP == f.HTTPS.VIP && f.HTTP.Port == f.HTTPS.Port {
		e.add("https.port", "is the same as http.port")
	}

	certs := map[string]bool{}
	for i, c := range f.Certificates {
		p := fmt.Sprintf("certificates[%d]", i)
		if c.Name == "" {
			e.add(p+".name", "must not be empty")
		}
		if certs[c.Name] {
			e.add(p+".name", "duplicate certificate %q", c.Name)
		}
		certs[c.Name] = true
		if _, err := tls.X509KeyPair([]byte(c.CertPEM), []byte(c.KeyPEM)); err != nil {
			e.add(p, "not a usable certificate and key: %v", err)
		}
	}

	hosts := map[string]string{}
	vhosts := map[string]bool{}
	for i := range f.VirtualHosts {
		v := &f.VirtualHosts[i]
		p := fmt.Sprintf("virtualHosts[%d]", i)
		if v.Name == "" || vhosts[v.Name] {
			e.add(p+".name", "must be unique and not empty: %q", v.Name)
		}
		vhosts[v.Name] = true
		if len(v.Hostnames) == 0 {
			e.add(p+".hostnames", "must not be empty")
		}
		for j, h := range v.Hostnames {
			hp := fmt.Sprintf("%s.hostnames[%d]", p, j)
			if !ValidHostname(h) {
				e.add(hp, "%q is not a DNS name or *.suffix wildcard", h)
			}
			if other, dup := hosts[h]; dup {
				e.add(hp, "%q is also served by virtual host %q", h, other)
			}
			hosts[h] = v.Name
		}
		if v.Certificate != "" {
			if !certs[v.Certificate] {
				e.add(p+".certificate", "unknown certificate %q", v.Certificate)
			}
			if f.HTTPS == nil {
				e.add(p+".certificate", "the fleet has no HTTPS listener")
			}
		} else if v.RedirectToHTTPS {
			e.add(p+".redirectToHTTPS", "needs a certificate")
		}
		if v.Certificate == "" && f.HTTP == nil {
			e.add(p, "served on HTTP only but the fleet has no HTTP listener")
		}
		if len(v.Routes) == 0 {
			e.add(p+".routes", "must not be empty")
		}
		names := map[string]bool{}
		for j := range v.Routes {
			r := &v.Routes[j]
			rp := fmt.Sprintf("%s.routes[%d]", p, j)
			if r.Name == "" || names[r.Name] {
				e.add(rp+".name", "must be unique and not empty: %q", r.Name)
			}
			names[r.Name] = true
			r.validate(rp, backends, &e)
		}
	}
	return errors.Join(e.list...)
}

func (b *Backend) validate(p string, e *errs) {
	if b.Name == "" || strings.ContainsAny(b.Name, " \t\n") {
		e.add(p+".name", "must be non-empty without spaces: %q", b.Name)
	}
	switch b.Protocol {
	case BackendTCP, BackendUDP, BackendHTTP1, BackendHTTP2, BackendGRPC:
	default:
		e.add(p+".protocol", "unknown protocol %q", b.Protocol)
	}
	if b.ProxyProtocol != 0 && b.ProxyProtocol != 1 && b.ProxyProtocol != 2 {
		e.add(p+".proxyProtocol", "must be 0, 1 or 2")
	}
	if b.ProxyProtocol != 0 && b.Protocol == BackendUDP {
		e.add(p+".proxyProtocol", "is not supported for UDP")
	}
	for i, g := range b.Groups {
		gp := fmt.Sprintf("%s.groups[%d]", p, i)
		if g.Cluster == "" {
			e.add(gp+".cluster", "must not be empty")
		}
		if g.Priority > 127 {
			e.add(gp+".priority", "must be 0-127")
		}
		if b.LocalityWeighted && g.Weight == 0 {
			e.add(gp+".weight", "must be positive when the backend is locality-weighted")
		}
		for j, ep := range g.Endpoints {
			if !ep.Address.IsValid() || ep.Port == 0 {
				e.add(fmt.Sprintf("%s.endpoints[%d]", gp, j), "needs an address and a port")
			}
		}
	}
	if hc := b.HealthCheck; hc != nil {
		if b.Protocol == BackendUDP {
			e.add(p+".healthCheck", "active health checks need a TCP or HTTP backend")
		}
		switch hc.Type {
		case HealthTCP:
		case HealthHTTP:
			if !strings.HasPrefix(hc.Path, "/") {
				e.add(p+".healthCheck.path", "must start with /")
			}

		default:
			e.add(p+".healthCheck.type", "must be TCP or HTTP, not %q", hc.Type)
		}
		for _, s := range hc.ExpectedStatuses {
			if s < 100 || s > 599 {
				e.add(p+".healthCheck.expectedStatuses", "%d is not an HTTP status", s)
			}
		}
	}
}

func (r *Route) validate(p string, backends map[string]*Backend, e *errs) {
	m := r.Match
	switch m.PathType {
	case "":
		if m.Path != "" {
			e.add(p+".match.pathType", "must be set with a path")
		}
	case PathExact, PathPrefix:
		if !strings.HasPrefix(m.Path, "/") {
			e.add(p+".match.path", "must start with /")
		}
	case PathRegex:
		if _, err := regexp.Compile(m.Path); err != nil {
			e.add(p+".match.path", "invalid regular expression: %v", err)
		}
	default:
		e.add(p+".match.pathType", "unknown path match %q", m.PathType)
	}
	for k, list := range [][]StringMatch{m.Headers, m.Query} {
		kind := []string{"headers", "query"}[k]
		for i, h := range list {
			hp := fmt.Sprintf("%s.match.%s[%d]", p, kind, i)
			if kind == "headers" && !tokenR.MatchString(h.Name) || h.Name == "" {
				e.add(hp+".name", "%q is not a valid name", h.Name)
			}
			switch h.Type {
			case "", StringExact:
			case StringRegex:
				if _, err := regexp.Compile(h.Value); err != nil {
					e.add(hp+".value", "invalid regular expression: %v", err)
				}
			default:
				e.add(hp+".type", "unknown match %q", h.Type)
			}
		}
	}
	if (r.Redirect == nil) == (r.Forward == nil) {
		e.add(p, "needs exactly one of redirect and forward")
	}
	if rd := r.Redirect; rd != nil {
		switch rd.StatusCode {
		case 0, 301, 302, 303, 307, 308:
		default:
			e.add(p+".redirect.statusCode", "%d is not a redirect status", rd.StatusCode)
		}
		if rd.Scheme != "" && rd.Scheme != "http" && rd.Scheme != "https" {
			e.add(p+".redirect.scheme", "must be http or https")
		}
		if rd.FullPath != "" && rd.PrefixPath != "" {
			e.add(p+".redirect", "set at most one of fullPath and prefixPath")
		}
		if rd.PrefixPath != "" && m.PathType != PathPrefix {
			e.add(p+".redirect.prefixPath", "needs a Prefix path match")
		}
	}
	if fw := r.Forward; fw != nil {
		if len(fw.Backends) == 0 {
			e.add(p+".forward.backends", "must not be empty")
		}
		total := uint64(0)
		for i, wb := range fw.Backends {
			b, ok := backends[wb.Backend]
			switch {
			case !ok:
				e.add(fmt.Sprintf("%s.forward.backends[%d]", p, i), "unknown backend %q", wb.Backend)
			case b.Protocol == BackendTCP || b.Protocol == BackendUDP:
				e.add(fmt.Sprintf("%s.forward.backends[%d]", p, i), "backend %q speaks %s, not HTTP", wb.Backend, b.Protocol)
			}
			total += uint64(wb.Weight)
		}
		if len(fw.Backends) > 0 && total == 0 {
			e.add(p+".forward.backends", "weights must not all be zero")
		}
		if fw.RewriteFullPath != "" && fw.RewritePrefixPath != "" {
			e.add(p+".forward", "set at most one of rewriteFullPath and rewritePrefixPath")
		}
		if fw.RewritePrefixPath != "" && m.PathType != PathPrefix {
			e.add(p+".forward.rewritePrefixPath", "needs a Prefix path match")
		}
		for k, hc := range []HeaderChanges{fw.RequestHeaders, fw.ResponseHeaders} {
			kind := []string{"requestHeaders", "responseHeaders"}[k]
			for _, h := range append(append([]Header{}, hc.Set...), hc.Add...) {
				if !tokenR.MatchString(h.Name) {
					e.add(p+".forward."+kind, "%q is not a valid header name", h.Name)
				}
			}
		}
	}
}
