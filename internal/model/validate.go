package model

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

var (
	dnsLabel  = `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
	hostnameR = regexp.MustCompile(`^(\*\.)?` + dnsLabel + `(\.` + dnsLabel + `)*$`)
	tokenR    = regexp.MustCompile("^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
)

// ValidHostname reports whether h is a lower-case DNS name or a "*.suffix" wildcard.
func ValidHostname(h string) bool { return len(h) <= 253 && hostnameR.MatchString(h) }

// Limits Envoy puts on header names and values (proto validation).
const maxHeaderBytes = 16384

// ValidHeaderName reports whether name is an HTTP token (RFC 7230).
func ValidHeaderName(name string) bool {
	return len(name) <= maxHeaderBytes && tokenR.MatchString(name)
}

// CheckHeaderValue says why v cannot be a header value Envoy adds ("" when it can):
// no NUL, CR or LF, valid UTF-8, and no '%', which Envoy reads as the start of
// a command operator (%REQ(...)%) and refuses when unescaped.
func CheckHeaderValue(v string) string {
	switch {
	case len(v) > maxHeaderBytes:
		return fmt.Sprintf("is longer than %d bytes", maxHeaderBytes)
	case !utf8.ValidString(v):
		return "is not valid UTF-8"
	case strings.ContainsAny(v, "\x00\r\n"):
		return "contains NUL, CR or LF"
	case strings.Contains(v, "%"):
		return "contains %, which the proxy reads as a command operator"
	}
	return ""
}

// CheckModifiableHeader says why a route may not set, add or remove header
// name ("" when it may): it must be a token, and Envoy refuses to modify
// pseudo-headers (":authority", ":path"...) and Host.
func CheckModifiableHeader(name string) string {
	switch {
	case strings.HasPrefix(name, ":"):
		return fmt.Sprintf("%q is a pseudo-header, which cannot be modified", name)
	case strings.EqualFold(name, "host"):
		return fmt.Sprintf("%q cannot be modified (use a URL rewrite of the hostname)", name)
	case !ValidHeaderName(name):
		return fmt.Sprintf("%q is not a valid header name", name)
	}
	return ""
}

// checkPath says why p cannot be a path in a match, redirect or rewrite.
func checkPath(p string) string {
	switch {
	case !strings.HasPrefix(p, "/"):
		return "must start with /"
	case !utf8.ValidString(p):
		return "is not valid UTF-8"
	case strings.ContainsAny(p, "?#"):
		return "must not contain ? or #"
	case strings.IndexFunc(p, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0:
		return "must not contain spaces or control characters"
	}
	return ""
}

// checkText says why s cannot be a name or label sent to the proxy.
func checkText(s string) string {
	if !utf8.ValidString(s) {
		return "is not valid UTF-8"
	}
	if strings.IndexFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }) >= 0 {
		return "must not contain control characters"
	}
	return ""
}

// checkDuration says why d cannot be a timeout or interval: negative, or
// below the millisecond Envoy counts in (where it would become 0, "none").
func checkDuration(d Duration) string {
	if d < 0 {
		return "must not be negative"
	}
	if d > 0 && d.D() < time.Millisecond {
		return "must be 0 or at least 1ms"
	}
	return ""
}

// checkRetry adds what makes a route's retry policy invalid.
func checkRetry(e *errs, p string, rt *Retry) {
	if rt.Attempts > MaxRetryAttempts {
		e.add(p+".attempts", "must be 0-%d", MaxRetryAttempts)
	}
	if rt.PerTryTimeout != 0 && (rt.PerTryTimeout.D() < time.Millisecond || rt.PerTryTimeout.D() > time.Hour) {
		e.add(p+".perTryTimeout", "must be 0 or 1ms-1h")
	}
	for i, on := range rt.RetryOn {
		if !slices.Contains(RetryOnConditions, on) {
			e.add(fmt.Sprintf("%s.retryOn[%d]", p, i), "%q is not one of %s", on, strings.Join(RetryOnConditions, ", "))
		} else if slices.Index(rt.RetryOn, on) != i {
			e.add(fmt.Sprintf("%s.retryOn[%d]", p, i), "%q appears twice", on)
		}
	}
	if len(rt.StatusCodes) > 0 && len(rt.RetryOn) > 0 && !slices.Contains(rt.RetryOn, "retriable-status-codes") {
		e.add(p+".statusCodes", "need retriable-status-codes in retryOn")
	}
	for i, c := range rt.StatusCodes {
		if c < 400 || c > 599 {
			e.add(fmt.Sprintf("%s.statusCodes[%d]", p, i), "must be 400-599, not %d", c)
		}
	}
}

// checkAddr says why a is not an address the proxy can use.
func checkAddr(a netip.Addr) string {
	if !a.IsValid() {
		return "must be an IP address"
	}
	if a.Zone() != "" {
		return "must not have a zone"
	}
	return ""
}

// ValidateCertificate refuses a chain and key Envoy's TLS stack refuses:
// every CERTIFICATE block must parse, the key must match the leaf, and the key
// must be RSA of 2048 to 4096 bits or ECDSA on P-256 or P-384. An expired
// certificate is served (clients decide).
func ValidateCertificate(certPEM, keyPEM []byte) error {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return err
	}
	for rest, i := certPEM, 0; ; i++ {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return fmt.Errorf("certificate %d of the chain: %v", i, err)
		}
	}
	switch k := pair.PrivateKey.(type) {
	case *rsa.PrivateKey:
		if n := k.N.BitLen(); n < 2048 || n > 4096 {
			return fmt.Errorf("RSA key of %d bits: the proxy takes 2048 to 4096", n)
		}
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("ECDSA key on %s: the proxy takes P-256 and P-384", k.Curve.Params().Name)
		}
	default:
		return fmt.Errorf("%T keys are not supported: use RSA (2048-4096 bits) or ECDSA (P-256, P-384)", pair.PrivateKey)
	}
	return nil
}

type errs struct{ list []error }

// namedDuration and namedString list fields in a fixed order, so the errors
// of one model always read the same (a map would shuffle them).
type namedDuration struct {
	name string
	d    Duration
}

type namedString struct {
	name string
	v    string
}

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
		if why := checkAddr(s.VIP); why != "" {
			e.add(p+".vip", "%s", why)
		}
		if why := checkDuration(s.IdleTimeout); why != "" {
			e.add(p+".idleTimeout", "%s", why)
		}
		for _, t := range []string{s.Ref.Tenant, s.Ref.Namespace, s.Ref.Name} {
			if why := checkText(t); why != "" {
				e.add(p+".ref", "%q %s", t, why)
			}
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
		if l != nil && (checkAddr(l.VIP) != "" || l.Port == 0) {
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
		if why := checkText(c.Name); why != "" {
			e.add(p+".name", "%s", why)
		}
		if err := ValidateCertificate([]byte(c.CertPEM), []byte(c.KeyPEM)); err != nil {
			e.add(p, "not a usable certificate and key: %v", err)
		}
	}

	hosts := map[string]string{}
	vhosts := map[string]bool{}
	for i := range f.VirtualHosts {
		v := &f.VirtualHosts[i]
		p := fmt.Sprintf("virtualHosts[%d]", i)
		if v.Name == "" || vhosts[v.Name] || checkText(v.Name) != "" {
			e.add(p+".name", "must be unique, printable and not empty: %q", v.Name)
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
			if r.Name == "" || names[r.Name] || checkText(r.Name) != "" {
				e.add(rp+".name", "must be unique, printable and not empty: %q", r.Name)
			}
			names[r.Name] = true
			r.validate(rp, backends, &e)
		}
	}
	f.validateGateways(backends, certs, &e)
	return errors.Join(e.list...)
}

func (b *Backend) validate(p string, e *errs) {
	if b.Name == "" || strings.ContainsAny(b.Name, " \t\n") || checkText(b.Name) != "" {
		e.add(p+".name", "must be non-empty, printable and without spaces: %q", b.Name)
	}
	if why := checkDuration(b.ConnectTimeout); why != "" {
		e.add(p+".connectTimeout", "%s", why)
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
	weights := map[uint32]uint64{} // priority → sum of locality weights
	for i, g := range b.Groups {
		gp := fmt.Sprintf("%s.groups[%d]", p, i)
		if g.Cluster == "" {
			e.add(gp+".cluster", "must not be empty")
		}
		for _, t := range []string{g.Cluster, g.Zone} {
			if why := checkText(t); why != "" {
				e.add(gp, "%q %s", t, why)
			}
		}
		if g.Priority > 127 {
			e.add(gp+".priority", "must be 0-127")
		}
		if b.LocalityWeighted && g.Weight == 0 {
			e.add(gp+".weight", "must be positive when the backend is locality-weighted")
		}
		for j, ep := range g.Endpoints {
			if checkAddr(ep.Address) != "" || ep.Port == 0 {
				e.add(fmt.Sprintf("%s.endpoints[%d]", gp, j), "needs an address (without zone) and a port")
			}
		}
		if b.LocalityWeighted && len(g.Endpoints) > 0 {
			weights[g.Priority] += uint64(g.Weight)
		}
	}
	for prio, w := range weights {
		if w > math.MaxUint32 {
			e.add(p+".groups", "the weights of priority %d add up to %d, more than %d", prio, w, uint64(math.MaxUint32))
		}
	}
	if hc := b.HealthCheck; hc != nil {
		if b.Protocol == BackendUDP {
			e.add(p+".healthCheck", "active health checks need a TCP or HTTP backend")
		}
		switch hc.Type {
		case HealthTCP:
		case HealthHTTP:
			if why := checkPath(hc.Path); why != "" {
				e.add(p+".healthCheck.path", "%s", why)
			}
		default:
			e.add(p+".healthCheck.type", "must be TCP or HTTP, not %q", hc.Type)
		}
		if hc.Interval != 0 && hc.Interval.D() < time.Second {
			e.add(p+".healthCheck.interval", "must be at least 1s")
		}
		if why := checkDuration(hc.Timeout); why != "" {
			e.add(p+".healthCheck.timeout", "%s", why)
		}
		for _, s := range hc.ExpectedStatuses {
			if s < 100 || s > 599 {
				e.add(p+".healthCheck.expectedStatuses", "%d is not an HTTP status", s)
			}
		}
	}
	if o := b.Outlier; o != nil {
		for _, f := range []namedDuration{{"interval", o.Interval}, {"baseEjectionTime", o.BaseEjectionTime}} {
			if why := checkDuration(f.d); why != "" {
				e.add(p+".outlier."+f.name, "%s", why)
			}
		}
		if o.MaxEjectionPercent > 100 {
			e.add(p+".outlier.maxEjectionPercent", "must be 0-100")
		}
	}
}

// Validate checks a route on its own, without the backends it refers to:
// what admission can say about a rule before any backend exists.
func (r *Route) Validate() error {
	var e errs
	r.validate("route", nil, &e)
	return errors.Join(e.list...)
}

func (r *Route) validate(p string, backends map[string]*Backend, e *errs) {
	m := r.Match
	switch m.PathType {
	case "":
		if m.Path != "" {
			e.add(p+".match.pathType", "must be set with a path")
		}
	case PathExact, PathPrefix:
		if why := checkPath(m.Path); why != "" {
			e.add(p+".match.path", "%s", why)
		}
	case PathRegex:
		if err := ValidateRegex(m.Path); err != nil {
			e.add(p+".match.path", "invalid regular expression: %v", err)
		}
	default:
		e.add(p+".match.pathType", "unknown path match %q", m.PathType)
	}
	if m.Method != "" && !tokenR.MatchString(m.Method) {
		e.add(p+".match.method", "%q is not a method", m.Method)
	}
	for k, list := range [][]StringMatch{m.Headers, m.Query} {
		kind := []string{"headers", "query"}[k]
		for i, h := range list {
			hp := fmt.Sprintf("%s.match.%s[%d]", p, kind, i)
			switch {
			case h.Name == "", len(h.Name) > 1024, checkText(h.Name) != "",
				kind == "headers" && !ValidHeaderName(h.Name):
				e.add(hp+".name", "%q is not a valid name", h.Name)
			}
			switch h.Type {
			case "", StringExact:
				if !utf8.ValidString(h.Value) {
					e.add(hp+".value", "is not valid UTF-8")
				}
			case StringRegex:
				if err := ValidateRegex(h.Value); err != nil {
					e.add(hp+".value", "invalid regular expression: %v", err)
				}
			default:
				e.add(hp+".type", "unknown match %q", h.Type)
			}
		}
	}
	set := 0
	for _, ok := range []bool{r.Redirect != nil, r.Forward != nil, r.Respond != nil} {
		if ok {
			set++
		}
	}
	if set != 1 {
		e.add(p, "needs exactly one of redirect, forward and respond")
	}
	if r.Respond != nil && (r.Respond.Status < 200 || r.Respond.Status > 599) {
		e.add(p+".respond.status", "must be 200-599, not %d", r.Respond.Status)
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
		if rd.Host != "" && (!ValidHostname(rd.Host) || strings.HasPrefix(rd.Host, "*")) {
			e.add(p+".redirect.host", "%q is not a DNS name", rd.Host)
		}
		if rd.FullPath != "" && rd.PrefixPath != "" {
			e.add(p+".redirect", "set at most one of fullPath and prefixPath")
		}
		for _, f := range []namedString{{"fullPath", rd.FullPath}, {"prefixPath", rd.PrefixPath}} {
			if why := checkPath(f.v); f.v != "" && why != "" {
				e.add(p+".redirect."+f.name, "%s", why)
			}
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
			case wb.Backend == "":
				e.add(fmt.Sprintf("%s.forward.backends[%d]", p, i), "names no backend")
			case backends == nil: // checked on its own: references are resolved later
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
		if total > math.MaxUint32 {
			e.add(p+".forward.backends", "weights add up to %d, more than %d", total, uint64(math.MaxUint32))
		}
		if fw.RewriteHost != "" && (!ValidHostname(fw.RewriteHost) || strings.HasPrefix(fw.RewriteHost, "*")) {
			e.add(p+".forward.rewriteHost", "%q is not a DNS name", fw.RewriteHost)
		}
		if fw.RewriteFullPath != "" && fw.RewritePrefixPath != "" {
			e.add(p+".forward", "set at most one of rewriteFullPath and rewritePrefixPath")
		}
		for _, f := range []namedString{{"rewriteFullPath", fw.RewriteFullPath}, {"rewritePrefixPath", fw.RewritePrefixPath}} {
			if why := checkPath(f.v); f.v != "" && why != "" {
				e.add(p+".forward."+f.name, "%s", why)
			}
		}
		if strings.Contains(fw.RewriteFullPath, "\\") {
			// The full path is a regex substitution, where \ starts a group reference.
			e.add(p+".forward.rewriteFullPath", "must not contain a backslash")
		}
		if fw.RewritePrefixPath != "" && m.PathType != PathPrefix {
			e.add(p+".forward.rewritePrefixPath", "needs a Prefix path match")
		}
		for _, f := range []namedDuration{{"timeout", fw.Timeout}, {"backendTimeout", fw.BackendTimeout}} {
			if why := checkDuration(f.d); why != "" {
				e.add(p+".forward."+f.name, "%s", why)
			}
		}
		if rt := fw.Retry; rt != nil {
			checkRetry(e, p+".forward.retry", rt)
		}
		for k, hc := range []HeaderChanges{fw.RequestHeaders, fw.ResponseHeaders} {
			kp := p + ".forward." + []string{"requestHeaders", "responseHeaders"}[k]
			for _, part := range []struct {
				kind string
				list []Header
			}{{"set", hc.Set}, {"add", hc.Add}} {
				kind := part.kind
				for i, h := range part.list {
					if why := CheckModifiableHeader(h.Name); why != "" {
						e.add(fmt.Sprintf("%s.%s[%d].name", kp, kind, i), "%s", why)
					}
					if why := CheckHeaderValue(h.Value); why != "" {
						e.add(fmt.Sprintf("%s.%s[%d].value", kp, kind, i), "%s", why)
					}
				}
			}
			for i, name := range hc.Remove {
				if why := CheckModifiableHeader(name); why != "" {
					e.add(fmt.Sprintf("%s.remove[%d]", kp, i), "%s", why)
				}
			}
		}
	}
}
