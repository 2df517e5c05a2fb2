package gateway

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// Route API limits (api/v1alpha1/route_types.go).
const (
	maxRules    = 64
	maxBackends = 16
)

// problem is something about a route the tenant has to fix; it becomes a
// condition on the route's parents.
type problem struct {
	// cond is ResolvedRefs (a backend) or Accepted (a rule the fleet cannot serve).
	cond   gwv1.RouteConditionType
	reason gwv1.RouteConditionReason
	msg    string
}

// backendResolver finds the node port of a backend; nil with no problem
// means not ready yet (an event follows).
type backendResolver func(ref gwv1.BackendObjectReference, weight *int32, proto v1.BackendProtocol) (*v1.RouteBackend, *problem)

// onePerMatch is a Route rule with a single match, ranked for sorting.
type onePerMatch struct {
	rule v1.RouteRule
	rank [5]int
}

// sortAndCap orders the rules by Gateway API match precedence (Exact path,
// then the longest prefix, then method, header and query matches; list order
// on ties) and keeps at most the Route API's number of rules.
func sortAndCap(rules []onePerMatch, problems *[]problem) []v1.RouteRule {
	slices.SortStableFunc(rules, func(a, b onePerMatch) int {
		for i := range a.rank {
			if c := cmp.Compare(b.rank[i], a.rank[i]); c != 0 {
				return c
			}
		}
		return 0
	})
	if len(rules) > maxRules {
		*problems = append(*problems, problem{gwv1.RouteConditionAccepted, gwv1.RouteReasonUnsupportedValue,
			fmt.Sprintf("%d matches: the fleet serves the first %d by precedence", len(rules), maxRules)})
		rules = rules[:maxRules]
	}
	out := make([]v1.RouteRule, len(rules))
	for i := range rules {
		out[i] = rules[i].rule
	}
	return out
}

func rankOf(m v1.RouteMatch) [5]int {
	var r [5]int
	if m.Path != nil {
		switch m.Path.Type {
		case v1.PathExact:
			r[0] = 2
		case v1.PathPrefix:
			r[0] = 1
		}
		if m.Path.Type != v1.PathRegularExpression {
			r[1] = len(m.Path.Value)
		}
	} else {
		r[0], r[1] = 1, 1 // PathPrefix "/"
	}
	if m.Method != "" {
		r[2] = 1
	}
	r[3], r[4] = len(m.Headers), len(m.QueryParams)
	return r
}

// httpRules maps the rules of an HTTPRoute; rules the fleet cannot serve are
// dropped with a problem, the rest is served.
func httpRules(spec *gwv1.HTTPRouteSpec, resolve backendResolver) ([]v1.RouteRule, []problem) {
	var problems []problem
	var out []onePerMatch
	for ri := range spec.Rules {
		rule := &spec.Rules[ri]
		what := fmt.Sprintf("rule %d", ri)
		if rule.Name != nil {
			what = fmt.Sprintf("rule %q", *rule.Name)
		}
		filters, _, err := httpFilters(rule.Filters)
		if err != nil {
			problems = append(problems, problem{gwv1.RouteConditionAccepted, gwv1.RouteReasonUnsupportedValue, fmt.Sprintf("%s: %v; not served", what, err)})
			continue
		}
		var backends []v1.RouteBackend
		for _, b := range rule.BackendRefs {
			if len(b.Filters) > 0 {
				problems = append(problems, problem{gwv1.RouteConditionAccepted, gwv1.RouteReasonUnsupportedValue,
					fmt.Sprintf("%s: backend %s: per-backend filters are not supported; backend not served", what, b.Name)})
				continue
			}
			rb, p := resolve(b.BackendObjectReference, b.Weight, v1.BackendHTTP)
			if p != nil {
				p.msg = what + ": " + p.msg
				problems = append(problems, *p)
			}
			if rb != nil {
				backends = append(backends, *rb)
			}
		}
		// A rule without a usable backend stays: the fleet answers it with
		// 500, as the Gateway API wants (its problem is reported above).
		if len(backends) > maxBackends {
			problems = append(problems, problem{gwv1.RouteConditionAccepted, gwv1.RouteReasonUnsupportedValue,
				fmt.Sprintf("%s: more than %d backends; the first %d are served", what, maxBackends, maxBackends)})
			backends = backends[:maxBackends]
		}
		timeouts, err := httpTimeouts(rule.Timeouts)
		if err != nil {
			problems = append(problems, problem{gwv1.RouteConditionAccepted, gwv1.RouteReasonUnsupportedValue, fmt.Sprintf("%s: %v; not served", what, err)})
			continue
		}
		retry, msg := httpRetry(rule.Retry)
		if msg != "" {
			problems = append(problems, problem{gwv1.RouteConditionAccepted, gwv1.RouteReasonUnsupportedValue, fmt.Sprintf("%s: %s", what, msg)})
		}
		base := v1.RouteRule{Backends: backends, Filters: filters, Timeouts: timeouts, Retry: retry}
		if rule.Name != nil && len(*rule.Name) <= 63 {
			base.Name = string(*rule.Name)
		}
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []gwv1.HTTPRouteMatch{{}}
		}
		for _, m := range matches {
			rm := httpMatch(m)
			r := base
			r.Matches = []v1.RouteMatch{rm}
			out = append(out, onePerMatch{rule: r, rank: rankOf(rm)})
		}
	}
	return sortAndCap(out, &problems), problems
}

func httpMatch(m gwv1.HTTPRouteMatch) v1.RouteMatch {
	var rm v1.RouteMatch
	if m.Path != nil && m.Path.Value != nil {
		pm := &v1.PathMatch{Type: v1.PathPrefix, Value: *m.Path.Value}
		if m.Path.Type != nil {
			switch *m.Path.Type {
			case gwv1.PathMatchExact:
				pm.Type = v1.PathExact
			case gwv1.PathMatchRegularExpression:
				pm.Type = v1.PathRegularExpression
			}
		}
		rm.Path = pm
	} else {
		rm.Path = &v1.PathMatch{Type: v1.PathPrefix, Value: "/"}
	}
	for _, h := range m.Headers {
		rm.Headers = append(rm.Headers, v1.HeaderMatch{Type: stringMatch(h.Type == nil || *h.Type == gwv1.HeaderMatchExact), Name: string(h.Name), Value: h.Value})
	}
	for _, q := range m.QueryParams {
		rm.QueryParams = append(rm.QueryParams, v1.HeaderMatch{Type: stringMatch(q.Type == nil || *q.Type == gwv1.QueryParamMatchExact), Name: string(q.Name), Value: q.Value})
	}
	if m.Method != nil {
		rm.Method = string(*m.Method)
	}
	return rm
}

func stringMatch(exact bool) v1.StringMatchType {
	if exact {
		return v1.MatchExact
	}
	return v1.MatchRegularExpression
}

func httpFilters(fs []gwv1.HTTPRouteFilter) (out []v1.RouteFilter, redirect bool, err error) {
	for _, f := range fs {
		switch f.Type {
		case gwv1.HTTPRouteFilterRequestRedirect:
			if f.RequestRedirect == nil {
				return nil, false, fmt.Errorf("filter RequestRedirect without requestRedirect")
			}
			rr := f.RequestRedirect
			r := &v1.RequestRedirect{StatusCode: 302}
			if rr.Scheme != nil {
				r.Scheme = *rr.Scheme
			}
			if rr.Hostname != nil {
				r.Hostname = v1.Hostname(*rr.Hostname)
			}
			if rr.Port != nil {
				r.Port = ptr.To(v1.PortNumber(*rr.Port))
			}
			if rr.StatusCode != nil {
				r.StatusCode = int32(*rr.StatusCode)
			}
			if r.Path, err = pathModifier(rr.Path); err != nil {
				return nil, false, err
			}
			out = append(out, v1.RouteFilter{Type: v1.FilterRequestRedirect, RequestRedirect: r})
			redirect = true
		case gwv1.HTTPRouteFilterURLRewrite:
			if f.URLRewrite == nil {
				return nil, false, fmt.Errorf("filter URLRewrite without urlRewrite")
			}
			u := &v1.URLRewrite{}
			if f.URLRewrite.Hostname != nil {
				u.Hostname = v1.Hostname(*f.URLRewrite.Hostname)
			}
			if u.Path, err = pathModifier(f.URLRewrite.Path); err != nil {
				return nil, false, err
			}
			out = append(out, v1.RouteFilter{Type: v1.FilterURLRewrite, URLRewrite: u})
		case gwv1.HTTPRouteFilterRequestHeaderModifier:
			out = append(out, v1.RouteFilter{Type: v1.FilterRequestHeaderModifier, RequestHeaderModifier: headerModifier(f.RequestHeaderModifier)})
		case gwv1.HTTPRouteFilterResponseHeaderModifier:
			out = append(out, v1.RouteFilter{Type: v1.FilterResponseHeaderModifier, ResponseHeaderModifier: headerModifier(f.ResponseHeaderModifier)})
		default:
			return nil, false, fmt.Errorf("filter %s is not supported", f.Type)
		}
	}
	return out, redirect, nil
}

func pathModifier(p *gwv1.HTTPPathModifier) (*v1.PathModifier, error) {
	if p == nil {
		return nil, nil
	}
	switch {
	case p.Type == gwv1.FullPathHTTPPathModifier && p.ReplaceFullPath != nil:
		return &v1.PathModifier{Type: v1.ReplaceFullPath, Value: *p.ReplaceFullPath}, nil
	case p.Type == gwv1.PrefixMatchHTTPPathModifier && p.ReplacePrefixMatch != nil:
		return &v1.PathModifier{Type: v1.ReplacePrefixMatch, Value: *p.ReplacePrefixMatch}, nil
	}
	return nil, fmt.Errorf("path modifier %s without its value", p.Type)
}

func headerModifier(h *gwv1.HTTPHeaderFilter) *v1.HeaderModifier {
	m := &v1.HeaderModifier{}
	if h == nil {
		return m
	}
	for _, x := range h.Set {
		m.Set = append(m.Set, v1.HTTPHeader{Name: string(x.Name), Value: x.Value})
	}
	for _, x := range h.Add {
		m.Add = append(m.Add, v1.HTTPHeader{Name: string(x.Name), Value: x.Value})
	}
	m.Remove = append(m.Remove, h.Remove...)
	return m
}

// httpRetry maps an HTTPRoute rule's retry (experimental channel; the
// standard channel's CRD prunes it): connection errors are retried, as the
// Gateway API asks, plus the listed codes; unset attempts keep the fleet's
// default count (2). Only idempotent methods are retried, as by default.
// backoff is not mapped: retries back off as Envoy's default (25ms base,
// jittered), which may be shorter than the minimum the field asks for.
// More than 5 attempts is capped with a message.
func httpRetry(r *gwv1.HTTPRouteRetry) (*v1.RouteRetry, string) {
	if r == nil {
		return nil, ""
	}
	out := &v1.RouteRetry{Attempts: 2, RetryOn: []v1.RetryOn{v1.RetryOnConnectFailure, v1.RetryOnRefusedStream, v1.RetryOnReset}}
	msg := ""
	if r.Attempts != nil {
		out.Attempts = int32(min(max(*r.Attempts, 0), 5))
		if *r.Attempts > 5 {
			msg = fmt.Sprintf("retry attempts %d: at most 5 retries are made", *r.Attempts)
		}
	}
	for _, c := range r.Codes {
		if c < 400 || c > 599 {
			continue // the CRD allows 400-599 only
		}
		if code := v1.RetryStatusCode(c); !slices.Contains(out.StatusCodes, code) {
			out.StatusCodes = append(out.StatusCodes, code)
		}
	}
	if len(out.StatusCodes) > 0 {
		out.RetryOn = append(out.RetryOn, v1.RetryOnRetriableStatusCodes)
	}
	return out, msg
}

func httpTimeouts(t *gwv1.HTTPRouteTimeouts) (*v1.RouteTimeouts, error) {
	if t == nil || (t.Request == nil && t.BackendRequest == nil) {
		return nil, nil
	}
	out := &v1.RouteTimeouts{}
	for _, x := range []struct {
		in  *gwv1.Duration
		out **metav1.Duration
	}{{t.Request, &out.Request}, {t.BackendRequest, &out.BackendRequest}} {
		if x.in == nil {
			continue
		}
		d, err := time.ParseDuration(string(*x.in))
		if err != nil {
			return nil, fmt.Errorf("timeout %q: %v", *x.in, err)
		}
		*x.out = &metav1.Duration{Duration: d}
	}
	return out, nil
}

// grpcRules maps the rules of a GRPCRoute: a method match is a path match on
// /<service>/<method>, backends speak gRPC.
func grpcRules(spec *gwv1.GRPCRouteSpec, resolve backendResolver) ([]v1.RouteRule, []problem) {
	var problems []problem
	var out []onePerMatch
	for ri := range spec.Rules {
		rule := &spec.Rules[ri]
		what := fmt.Sprintf("rule %d", ri)
		if rule.Name != nil {
			what = fmt.Sprintf("rule %q", *rule.Name)
		}
		var filters []v1.RouteFilter
		unsupported := ""
		for _, f := range rule.Filters {
			switch f.Type {
			case gwv1.GRPCRouteFilterRequestHeaderModifier:
				filters = append(filters, v1.RouteFilter{Type: v1.FilterRequestHeaderModifier, RequestHeaderModifier: headerModifier(f.RequestHeaderModifier)})
			case gwv1.GRPCRouteFilterResponseHeaderModifier:
				filters = append(filters, v1.RouteFilter{Type: v1.FilterResponseHeaderModifier, ResponseHeaderModifier: headerModifier(f.ResponseHeaderModifier)})
			default:
				unsupported = string(f.Type)
			}
		}
		if unsupported != "" {
			problems = append(problems, problem{gwv1.RouteConditionAccepted, gwv1.RouteReasonUnsupportedValue, fmt.Sprintf("%s: filter %s is not supported; not served", what, unsupported)})
			continue
		}
		var backends []v1.RouteBackend
		for _, b := range rule.BackendRefs {
			if len(b.Filters) > 0 {
				problems = append(problems, problem{gwv1.RouteConditionAccepted, gwv1.RouteReasonUnsupportedValue,
					fmt.Sprintf("%s: backend %s: per-backend filters are not supported; backend not served", what, b.Name)})
				continue
			}
			rb, p := resolve(b.BackendObjectReference, b.Weight, v1.BackendGRPC)
			if p != nil {
				p.msg = what + ": " + p.msg
				problems = append(problems, *p)
			}
			if rb != nil {
				backends = append(backends, *rb)
			}
		}
		if len(backends) == 0 {
			continue
		}
		if len(backends) > maxBackends {
			backends = backends[:maxBackends]
		}
		base := v1.RouteRule{Backends: backends, Filters: filters}
		if rule.Name != nil && len(*rule.Name) <= 63 {
			base.Name = string(*rule.Name)
		}
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []gwv1.GRPCRouteMatch{{}}
		}
		for _, m := range matches {
			rm := grpcMatch(m)
			r := base
			r.Matches = []v1.RouteMatch{rm}
			out = append(out, onePerMatch{rule: r, rank: rankOf(rm)})
		}
	}
	return sortAndCap(out, &problems), problems
}

func grpcMatch(m gwv1.GRPCRouteMatch) v1.RouteMatch {
	rm := v1.RouteMatch{Path: &v1.PathMatch{Type: v1.PathPrefix, Value: "/"}}
	if mm := m.Method; mm != nil {
		svc, method := ptr.Deref(mm.Service, ""), ptr.Deref(mm.Method, "")
		regex := mm.Type != nil && *mm.Type == gwv1.GRPCMethodMatchRegularExpression
		switch {
		case !regex && svc != "" && method != "":
			rm.Path = &v1.PathMatch{Type: v1.PathExact, Value: "/" + svc + "/" + method}
		case !regex && svc != "":
			rm.Path = &v1.PathMatch{Type: v1.PathPrefix, Value: "/" + svc}
		default:
			s, m := svc, method
			if !regex {
				s, m = regexp.QuoteMeta(s), regexp.QuoteMeta(m)
			}
			if s == "" {
				s = "[^/]+"
			}
			if m == "" {
				m = "[^/]+"
			}
			rm.Path = &v1.PathMatch{Type: v1.PathRegularExpression, Value: "/" + s + "/" + m}
		}
	}
	for _, h := range m.Headers {
		rm.Headers = append(rm.Headers, v1.HeaderMatch{Type: stringMatch(h.Type == nil || *h.Type == gwv1.GRPCHeaderMatchExact), Name: string(h.Name), Value: h.Value})
	}
	return rm
}
