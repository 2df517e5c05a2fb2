package route

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/model"
	"github.com/fleetlb/fleetlb/manager/backends"
	"github.com/fleetlb/fleetlb/manager/hostpattern"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// Allowed reports whether a Tenant whose spec.hostnames are patterns may
// claim hostname h. A pattern is an exact name, or "*.suffix", which allows
// every name under suffix at any depth (a.suffix, b.a.suffix) and wildcards
// under it (*.suffix itself, *.a.suffix), but not suffix alone.
//
// A pattern that is a public suffix or a wildcard directly under one
// (hostpattern.PublicSuffix) allows nothing.
func Allowed(patterns []v1.Hostname, h v1.Hostname) bool {
	return slices.ContainsFunc(patterns, func(p v1.Hostname) bool { return matches(p, h) && !hostpattern.PublicSuffix(p) })
}

// matches reports whether pattern p covers h, as Allowed describes.
func matches(p, h v1.Hostname) bool {
	if p == h {
		return true
	}
	if suffix, ok := strings.CutPrefix(string(p), "*."); ok {
		name := strings.TrimPrefix(string(h), "*.")
		if name != string(h) && name == suffix {
			return true // *.suffix itself
		}
		if strings.HasSuffix(name, "."+suffix) {
			return true
		}
	}
	return false
}

// publicSuffixCover is the pattern of patterns that would cover h if it were
// not a public suffix pattern, for a message that says why h is refused.
func publicSuffixCover(patterns []v1.Hostname, h v1.Hostname) (v1.Hostname, bool) {
	for _, p := range patterns {
		if hostpattern.PublicSuffix(p) && matches(p, h) {
			return p, true
		}
	}
	return "", false
}

// Covers reports whether a TLS hostname (exact or "*.suffix", one label)
// serves hostname h.
func Covers(tlsHost, h v1.Hostname) bool {
	if tlsHost == h {
		return true
	}
	suffix, ok := strings.CutPrefix(string(tlsHost), "*.")
	if !ok || strings.HasPrefix(string(h), "*.") {
		return false
	}
	first, rest, found := strings.Cut(string(h), ".")
	return found && first != "" && rest == suffix
}

// CoveredBy reports whether any of the TLS hostnames serves h.
func CoveredBy(tlsHosts []v1.Hostname, h v1.Hostname) bool {
	return slices.ContainsFunc(tlsHosts, func(th v1.Hostname) bool { return Covers(th, h) })
}

// SameGroup reports whether two tenants may serve the same hostname: the
// same tenant, or two tenants of one non-empty group.
func SameGroup(a, b *v1.Tenant) bool {
	return tenant.GroupKey(a) == tenant.GroupKey(b)
}

// CheckSecret says why a Secret cannot serve TLS ("" when it can).
func CheckSecret(s *corev1.Secret) (reason, msg string) {
	if s.Type != corev1.SecretTypeTLS {
		return v1.ReasonSecretNotTLS, fmt.Sprintf("secret %s is of type %q, not %s", s.Name, s.Type, corev1.SecretTypeTLS)
	}
	if err := model.ValidateCertificate(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]); err != nil {
		return v1.ReasonSecretNotTLS, fmt.Sprintf("secret %s has no usable certificate and key: %v", s.Name, err)
	}
	return "", ""
}

// RuleName names rule i of a Route in messages.
func RuleName(rule *v1.RouteRule, i int) string {
	if rule.Name != "" {
		return fmt.Sprintf("rule %d (%s)", i, rule.Name)
	}
	return fmt.Sprintf("rule %d", i)
}

// CheckRule says why a rule cannot be served ("" when it can): a backend
// problem is InvalidBackend, anything else InvalidSpec. The fleet serves the
// Route's other rules.
func CheckRule(rule *v1.RouteRule) (reason, msg string) {
	var redirect, rewrite *v1.RouteFilter
	for i := range rule.Filters {
		f := &rule.Filters[i]
		switch f.Type {
		case v1.FilterRequestRedirect:
			if redirect != nil || f.RequestRedirect == nil {
				return v1.ReasonInvalidSpec, "at most one RequestRedirect filter, with its requestRedirect field"
			}
			redirect = f
		case v1.FilterURLRewrite:
			if rewrite != nil || f.URLRewrite == nil {
				return v1.ReasonInvalidSpec, "at most one URLRewrite filter, with its urlRewrite field"
			}
			rewrite = f
		case v1.FilterRequestHeaderModifier:
			if f.RequestHeaderModifier == nil {
				return v1.ReasonInvalidSpec, "RequestHeaderModifier filter without requestHeaderModifier"
			}
		case v1.FilterResponseHeaderModifier:
			if f.ResponseHeaderModifier == nil {
				return v1.ReasonInvalidSpec, "ResponseHeaderModifier filter without responseHeaderModifier"
			}
		default:
			return v1.ReasonInvalidSpec, fmt.Sprintf("unknown filter type %q", f.Type)
		}
	}
	if redirect != nil && rewrite != nil {
		return v1.ReasonInvalidSpec, "RequestRedirect and URLRewrite cannot be used together"
	}
	prefixOnly := func(what string, pm *v1.PathModifier) (string, string) {
		if pm == nil || pm.Type != v1.ReplacePrefixMatch {
			return "", ""
		}
		for _, m := range rule.Matches {
			if m.Path != nil && m.Path.Type != v1.PathPrefix {
				return v1.ReasonInvalidSpec, what + " ReplacePrefixMatch needs PathPrefix matches"
			}
		}
		return "", ""
	}
	if redirect != nil {
		if reason, msg := prefixOnly("RequestRedirect", redirect.RequestRedirect.Path); reason != "" {
			return reason, msg
		}
	}
	if rewrite != nil {
		if reason, msg := prefixOnly("URLRewrite", rewrite.URLRewrite.Path); reason != "" {
			return reason, msg
		}
	}
	// What the fleet model refuses, the proxy would refuse (NACK) for every
	// tenant: the rule is refused here, with the model's reason.
	if msg := checkRuleModel(rule); msg != "" {
		return v1.ReasonInvalidSpec, msg
	}
	if redirect != nil {
		return "", "" // answered here: backends, if any, are not used
	}
	if len(rule.Backends) == 0 {
		return v1.ReasonInvalidBackend, "no backends"
	}
	total := int64(0)
	for _, b := range rule.Backends {
		if b.NodePort < 1 || b.NodePort > 65535 {
			return v1.ReasonInvalidBackend, fmt.Sprintf("backend %s has no node port", cmp.Or(b.ServiceName, "(unnamed)"))
		}
		total += int64(Weight(b))
	}
	if total == 0 {
		return v1.ReasonInvalidBackend, "every backend has weight 0"
	}
	return "", ""
}

// CheckRuleFor is CheckRule for a rule of Tenant t's Route: also every
// backend's node port must lie in the Tenant's nodePortRange (a tenant may
// send the fleet only to its nodes' NodePorts).
func CheckRuleFor(t *v1.Tenant, rule *v1.RouteRule) (reason, msg string) {
	if reason, msg := CheckRule(rule); reason != "" || len(rule.Backends) == 0 {
		return reason, msg
	}
	if redirectOnly(rule) {
		return "", "" // backends are not used
	}
	for _, b := range rule.Backends {
		if why := backends.CheckNodePort(t, int32(b.NodePort)); why != "" {
			return v1.ReasonInvalidBackend, fmt.Sprintf("backend %s: %s", cmp.Or(b.ServiceName, "(unnamed)"), why)
		}
	}
	return "", ""
}

func redirectOnly(rule *v1.RouteRule) bool {
	return slices.ContainsFunc(rule.Filters, func(f v1.RouteFilter) bool { return f.Type == v1.FilterRequestRedirect })
}

// checkRuleModel validates each match of the rule as the fleet model route it
// becomes (backends are resolved later), and says why not ("" when valid).
func checkRuleModel(rule *v1.RouteRule) string {
	redirect, fw := RuleAction(rule)
	if fw != nil {
		for i, b := range rule.Backends {
			fw.Backends = append(fw.Backends, model.WeightedBackend{Backend: fmt.Sprintf("backend-%d", i), Weight: uint32(max(Weight(b), 0))})
		}
	}
	matches := rule.Matches
	if len(matches) == 0 {
		matches = []v1.RouteMatch{{}}
	}
	for i := range matches {
		r := model.Route{Name: "rule", Match: ModelMatch(&matches[i]), Redirect: redirect, Forward: fw}
		if fw != nil && !slices.ContainsFunc(fw.Backends, func(b model.WeightedBackend) bool { return b.Weight > 0 }) {
			r.Forward = &model.Forward{Backends: []model.WeightedBackend{{Backend: "backend", Weight: 1}}} // reported as InvalidBackend
		}
		if err := r.Validate(); err != nil {
			msg := strings.ReplaceAll(err.Error(), "route.", "")
			if len(matches) > 1 {
				msg = fmt.Sprintf("match %d: %s", i, msg)
			}
			return strings.ReplaceAll(msg, "\n", "; ")
		}
	}
	return ""
}

// Weight is a backend's weight, 1 when unset.
func Weight(b v1.RouteBackend) int32 {
	if b.Weight == nil {
		return 1
	}
	return *b.Weight
}

// FleetAddresses are the addresses of a fleet's shared HTTP/HTTPS listeners:
// its status, or its requested VIP until status reports one.
func FleetAddresses(f *v1.ProxyFleet) []v1.Address {
	if len(f.Status.Addresses) > 0 {
		return f.Status.Addresses
	}
	if f.Spec.VIP != "" {
		return []v1.Address{{IP: f.Spec.VIP, IPMode: v1.IPModeProxy}}
	}
	return nil
}

// FleetPorts are the ports of a fleet's shared listeners that serve rt: the
// HTTP listener's, and the HTTPS listener's when rt has TLS.
func FleetPorts(f *v1.ProxyFleet, rt *v1.Route) []v1.RoutePort {
	var out []v1.RoutePort
	if f.Spec.HTTP != nil {
		out = append(out, v1.RoutePort{Port: f.Spec.HTTP.Port, Protocol: v1.RoutePortHTTP})
	}
	if f.Spec.HTTPS != nil && len(rt.Spec.TLS) > 0 {
		out = append(out, v1.RoutePort{Port: f.Spec.HTTPS.Port, Protocol: v1.RoutePortHTTPS})
	}
	return out
}

// RuleAction is a rule's redirect, or its forward without backends, in the
// fleet model.
func RuleAction(rule *v1.RouteRule) (*model.Redirect, *model.Forward) {
	fw := &model.Forward{}
	for _, f := range rule.Filters {
		switch f.Type {
		case v1.FilterRequestRedirect:
			rr := f.RequestRedirect
			rd := &model.Redirect{Scheme: rr.Scheme, Host: string(rr.Hostname), StatusCode: int(rr.StatusCode)}
			if rr.Port != nil {
				rd.Port = uint16(*rr.Port)
			}
			if p := rr.Path; p != nil {
				if p.Type == v1.ReplaceFullPath {
					rd.FullPath = p.Value
				} else {
					rd.PrefixPath = p.Value
				}
			}
			return rd, nil
		case v1.FilterURLRewrite:
			fw.RewriteHost = string(f.URLRewrite.Hostname)
			if p := f.URLRewrite.Path; p != nil {
				if p.Type == v1.ReplaceFullPath {
					fw.RewriteFullPath = p.Value
				} else {
					fw.RewritePrefixPath = p.Value
				}
			}
		case v1.FilterRequestHeaderModifier:
			fw.RequestHeaders = headerChanges(f.RequestHeaderModifier)
		case v1.FilterResponseHeaderModifier:
			fw.ResponseHeaders = headerChanges(f.ResponseHeaderModifier)
		}
	}
	if to := rule.Timeouts; to != nil {
		if to.Request != nil {
			fw.Timeout = model.Duration(to.Request.Duration)
		}
		if to.BackendRequest != nil {
			fw.BackendTimeout = model.Duration(to.BackendRequest.Duration)
		}
	}
	fw.Retry = modelRetry(rule.Retry)
	return nil, fw
}

// modelRetry is a rule's retry override in the model; nil keeps the
// virtual host's default policy.
func modelRetry(r *v1.RouteRetry) *model.Retry {
	if r == nil {
		return nil
	}
	out := &model.Retry{Attempts: uint32(max(r.Attempts, 0)), AllMethods: r.AllMethods}
	if r.PerTryTimeout != nil {
		out.PerTryTimeout = model.Duration(r.PerTryTimeout.Duration)
	}
	for _, on := range r.RetryOn {
		out.RetryOn = append(out.RetryOn, string(on))
	}
	for _, c := range r.StatusCodes {
		out.StatusCodes = append(out.StatusCodes, uint32(max(c, 0)))
	}
	return out
}

func headerChanges(m *v1.HeaderModifier) model.HeaderChanges {
	var hc model.HeaderChanges
	for _, h := range m.Set {
		hc.Set = append(hc.Set, model.Header{Name: h.Name, Value: h.Value})
	}
	for _, h := range m.Add {
		hc.Add = append(hc.Add, model.Header{Name: h.Name, Value: h.Value})
	}
	hc.Remove = slices.Clone(m.Remove)
	return hc
}

// ModelMatch is a rule match in the fleet model.
func ModelMatch(m *v1.RouteMatch) model.Match {
	out := model.Match{PathType: model.PathPrefix, Path: "/", Method: m.Method}
	if p := m.Path; p != nil {
		out.Path = p.Value
		switch p.Type {
		case v1.PathExact:
			out.PathType = model.PathExact
		case v1.PathRegularExpression:
			out.PathType = model.PathRegex
		}
	}
	conv := func(in []v1.HeaderMatch) []model.StringMatch {
		var sm []model.StringMatch
		for _, h := range in {
			typ := model.StringExact
			if h.Type == v1.MatchRegularExpression {
				typ = model.StringRegex
			}
			sm = append(sm, model.StringMatch{Name: h.Name, Type: typ, Value: h.Value})
		}
		return sm
	}
	out.Headers, out.Query = conv(m.Headers), conv(m.QueryParams)
	return out
}
