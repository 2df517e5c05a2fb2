package l7

import (
	"cmp"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"

	"github.com/fleetlb/fleetlb/internal/proxy/pbcheck"
)

// RouteTable is a compiled RouteConfiguration: virtual hosts indexed by domain in
// Envoy's precedence (exact, then the longest suffix wildcard, then the longest
// prefix wildcard, then "*"), each with its routes in order.
type RouteTable struct {
	name  string
	exact map[string]*virtualHost
	// exactChanged overlays exact with the domains added or changed (nil:
	// removed) since exact was built, so that a table compiled from the
	// previous one shares its index instead of copying it (encoded.go).
	exactChanged map[string]*virtualHost
	suffix       []wildcardHost // "*.example.com" as ".example.com", longest first
	prefix       []wildcardHost // "www.*" as "www.", longest first
	any          *virtualHost
	headers      headerOps
}

type wildcardHost struct {
	part string
	vh   *virtualHost
}

type virtualHost struct {
	name    string
	routes  []*route
	headers headerOps
	retry   *retryPolicy // for routes without their own
}

type route struct {
	name     string
	match    routeMatch
	redirect *redirectAction
	forward  *forwardAction
	// status of a direct_response (no body), 0 otherwise.
	status  int
	headers headerOps
}

type routeMatch struct {
	kind          string // "prefix", "path", "regex", "separated"
	value         string
	re            *regexp.Regexp
	caseSensitive bool
	headers       []headerMatch
	query         []queryMatch
	grpc          bool
}

type headerMatch struct {
	name    string
	str     *stringMatch // nil: present_match
	present bool
	invert  bool
}

type queryMatch struct {
	name string
	str  *stringMatch // nil: present_match
}

type stringMatch struct {
	kind       string // exact, prefix, suffix, contains, regex
	value      string
	re         *regexp.Regexp
	ignoreCase bool
}

type redirectAction struct {
	scheme, host, path, prefixRewrite string
	port                              uint32
	code                              int
	stripQuery                        bool
}

type forwardAction struct {
	clusters      []weightedCluster
	totalWeight   uint32
	prefixRewrite *string
	regexRewrite  *regexp.Regexp
	regexSubst    string
	hostRewrite   string
	timeout       time.Duration // 0: none
	retry         *retryPolicy  // nil: the virtual host's applies (a route's replaces it whole)
	hashSourceIP  bool
}

type weightedCluster struct {
	name   string
	weight uint32
}

type headerOps struct {
	add    []headerAdd
	remove []string
	// response side
	respAdd    []headerAdd
	respRemove []string
}

type headerAdd struct {
	key, value string
	action     corev3.HeaderValueOption_HeaderAppendAction
}

// CompileRouteConfig validates rc and compiles it for per-request lookups.
func CompileRouteConfig(rc *routev3.RouteConfiguration) (*RouteTable, error) {
	where := fmt.Sprintf("route_configuration %q", rc.GetName())
	if err := pbcheck.Unsupported(where, rc, "name", "virtual_hosts",
		"request_headers_to_add", "request_headers_to_remove", "response_headers_to_add", "response_headers_to_remove"); err != nil {
		return nil, err
	}
	rt := &RouteTable{name: rc.GetName(), exact: map[string]*virtualHost{}}
	var err error
	if rt.headers, err = compileHeaderOps(where, rc.GetRequestHeadersToAdd(), rc.GetRequestHeadersToRemove(),
		rc.GetResponseHeadersToAdd(), rc.GetResponseHeadersToRemove()); err != nil {
		return nil, err
	}
	seen := map[string]string{}
	retries := retryPolicies{}
	for i, v := range rc.GetVirtualHosts() {
		vw := fmt.Sprintf("%s: virtual_hosts[%d] %q", where, i, v.GetName())
		vh, err := compileVirtualHost(vw, v, retries)
		if err != nil {
			return nil, err
		}
		if len(v.GetDomains()) == 0 {
			return nil, fmt.Errorf("%s: domains is empty", vw)
		}
		for _, d := range v.GetDomains() {
			d = strings.ToLower(d)
			if other, dup := seen[d]; dup {
				return nil, fmt.Errorf("%s: domain %q is already used by virtual host %q", vw, d, other)
			}
			seen[d] = v.GetName()
			switch {
			case d == "*":
				rt.any = vh
			case strings.HasPrefix(d, "*"):
				rt.suffix = append(rt.suffix, wildcardHost{d[1:], vh})
			case strings.HasSuffix(d, "*"):
				rt.prefix = append(rt.prefix, wildcardHost{d[:len(d)-1], vh})
			case strings.Contains(d, "*"):
				return nil, fmt.Errorf("%s: domain %q: a wildcard must be the first or last character", vw, d)
			default:
				rt.exact[d] = vh
			}
		}
	}
	longestFirst := func(a, b wildcardHost) int { return cmp.Compare(len(b.part), len(a.part)) }
	slices.SortStableFunc(rt.suffix, longestFirst)
	slices.SortStableFunc(rt.prefix, longestFirst)
	return rt, nil
}

// virtualHost returns the virtual host for host (lower-cased, port already handled).
func (rt *RouteTable) virtualHost(host string) *virtualHost {
	if vh := rt.exactHost(host); vh != nil {
		return vh
	}
	// A wildcard never matches the empty string: "*.a.com" does not match ".a.com".
	for _, w := range rt.suffix {
		if len(host) > len(w.part) && strings.HasSuffix(host, w.part) {
			return w.vh
		}
	}
	for _, w := range rt.prefix {
		if len(host) > len(w.part) && strings.HasPrefix(host, w.part) {
			return w.vh
		}
	}
	return rt.any
}

// exactHost is the virtual host with the exact domain host, or nil.
func (rt *RouteTable) exactHost(host string) *virtualHost {
	if vh, ok := rt.exactChanged[host]; ok {
		return vh
	}
	return rt.exact[host]
}

// retryPolicies shares the compiled retry policy of virtual hosts whose
// retry_policy is the same (fleetlb gives every virtual host the same one); a
// compiled policy is never modified.
type retryPolicies map[string]*retryPolicy

func (ps retryPolicies) compile(where string, rp *routev3.RetryPolicy) (*retryPolicy, error) {
	key, err := proto.MarshalOptions{Deterministic: true}.Marshal(rp)
	if err != nil {
		return compileRetryPolicy(where, rp)
	}
	if p, ok := ps[string(key)]; ok {
		return p, nil
	}
	p, err := compileRetryPolicy(where, rp)
	if err != nil {
		return nil, err
	}
	ps[string(key)] = p
	return p, nil
}

func compileVirtualHost(where string, v *routev3.VirtualHost, retries retryPolicies) (*virtualHost, error) {
	if err := pbcheck.Unsupported(where, v, "name", "domains", "routes", "retry_policy",
		"request_headers_to_add", "request_headers_to_remove", "response_headers_to_add", "response_headers_to_remove"); err != nil {
		return nil, err
	}
	vh := &virtualHost{name: v.GetName()}
	var err error
	if rp := v.GetRetryPolicy(); rp != nil {
		if vh.retry, err = retries.compile(where+": retry_policy", rp); err != nil {
			return nil, err
		}
	}
	if vh.headers, err = compileHeaderOps(where, v.GetRequestHeadersToAdd(), v.GetRequestHeadersToRemove(),
		v.GetResponseHeadersToAdd(), v.GetResponseHeadersToRemove()); err != nil {
		return nil, err
	}
	for i, r := range v.GetRoutes() {
		cr, err := compileRoute(fmt.Sprintf("%s: routes[%d] %q", where, i, r.GetName()), r)
		if err != nil {
			return nil, err
		}
		vh.routes = append(vh.routes, cr)
	}
	return vh, nil
}

func compileRoute(where string, r *routev3.Route) (*route, error) {
	if err := pbcheck.Unsupported(where, r, "name", "match", "route", "redirect", "direct_response",
		"request_headers_to_add", "request_headers_to_remove", "response_headers_to_add", "response_headers_to_remove"); err != nil {
		return nil, err
	}
	cr := &route{name: r.GetName()}
	var err error
	if cr.match, err = compileMatch(where+": match", r.GetMatch()); err != nil {
		return nil, err
	}
	if cr.headers, err = compileHeaderOps(where, r.GetRequestHeadersToAdd(), r.GetRequestHeadersToRemove(),
		r.GetResponseHeadersToAdd(), r.GetResponseHeadersToRemove()); err != nil {
		return nil, err
	}
	switch {
	case r.GetRoute() != nil:
		cr.forward, err = compileForward(where+": route", r.GetRoute())
	case r.GetRedirect() != nil:
		cr.redirect, err = compileRedirect(where+": redirect", r.GetRedirect())
	case r.GetDirectResponse() != nil:
		d := r.GetDirectResponse()
		if err = pbcheck.Unsupported(where+": direct_response", d, "status"); err == nil && (d.GetStatus() < 200 || d.GetStatus() > 599) {
			err = fmt.Errorf("%s: direct_response.status %d is not 200-599", where, d.GetStatus())
		}
		cr.status = int(d.GetStatus())
	default:
		err = fmt.Errorf("%s: one of route, redirect or direct_response is required", where)
	}
	return cr, err
}

func compileMatch(where string, m *routev3.RouteMatch) (routeMatch, error) {
	var rm routeMatch
	if m == nil {
		return rm, fmt.Errorf("%s is required", where)
	}
	if err := pbcheck.Unsupported(where, m, "prefix", "path", "safe_regex", "path_separated_prefix",
		"case_sensitive", "headers", "query_parameters", "grpc"); err != nil {
		return rm, err
	}
	rm.caseSensitive = m.GetCaseSensitive() == nil || m.GetCaseSensitive().GetValue()
	switch ps := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		rm.kind, rm.value = "prefix", ps.Prefix
	case *routev3.RouteMatch_Path:
		rm.kind, rm.value = "path", ps.Path
	case *routev3.RouteMatch_PathSeparatedPrefix:
		p := ps.PathSeparatedPrefix
		if !strings.HasPrefix(p, "/") || (len(p) > 1 && strings.HasSuffix(p, "/")) || strings.ContainsAny(p, "?#") {
			return rm, fmt.Errorf("%s: path_separated_prefix %q must start with / and not end with / or contain ? or #", where, p)
		}
		rm.kind, rm.value = "separated", p
	case *routev3.RouteMatch_SafeRegex:
		re, err := compileRegex(where+": safe_regex", ps.SafeRegex)
		if err != nil {
			return rm, err
		}
		rm.kind, rm.re = "regex", re
	default:
		return rm, fmt.Errorf("%s: one of prefix, path, path_separated_prefix or safe_regex is required", where)
	}
	if !rm.caseSensitive {
		rm.value = strings.ToLower(rm.value)
		if rm.re != nil {
			rm.re = regexp.MustCompile("(?i)" + rm.re.String())
		}
	}
	for i, h := range m.GetHeaders() {
		hm, err := compileHeaderMatcher(fmt.Sprintf("%s: headers[%d]", where, i), h)
		if err != nil {
			return rm, err
		}
		rm.headers = append(rm.headers, hm)
	}
	for i, q := range m.GetQueryParameters() {
		qw := fmt.Sprintf("%s: query_parameters[%d]", where, i)
		if err := pbcheck.Unsupported(qw, q, "name", "string_match", "present_match"); err != nil {
			return rm, err
		}
		qm := queryMatch{name: q.GetName()}
		if q.GetStringMatch() != nil {
			sm, err := compileStringMatch(qw+": string_match", q.GetStringMatch())
			if err != nil {
				return rm, err
			}
			qm.str = sm
		}
		rm.query = append(rm.query, qm)
	}
	if g := m.GetGrpc(); g != nil {
		if err := pbcheck.Unsupported(where+": grpc", g); err != nil {
			return rm, err
		}
		rm.grpc = true
	}
	return rm, nil
}

func compileHeaderMatcher(hw string, h *routev3.HeaderMatcher) (headerMatch, error) {
	if err := pbcheck.Unsupported(hw, h, "name", "string_match", "present_match", "invert_match"); err != nil {
		return headerMatch{}, err
	}
	hm := headerMatch{name: strings.ToLower(h.GetName()), invert: h.GetInvertMatch()}
	switch {
	case h.GetStringMatch() != nil:
		sm, err := compileStringMatch(hw+": string_match", h.GetStringMatch())
		if err != nil {
			return hm, err
		}
		hm.str = sm
	case h.GetHeaderMatchSpecifier() != nil:
		hm.present = h.GetPresentMatch()
		if _, ok := h.GetHeaderMatchSpecifier().(*routev3.HeaderMatcher_PresentMatch); !ok {
			return hm, fmt.Errorf("%s: only string_match and present_match are supported", hw)
		}
	default:
		hm.present = true // no specifier: the header must be present
	}
	return hm, nil
}

func compileRegex(where string, m *matcherv3.RegexMatcher) (*regexp.Regexp, error) {
	if err := pbcheck.Unsupported(where, m, "regex", "google_re2"); err != nil {
		return nil, err
	}
	// Envoy matches the whole value (RE2 full match); Go's RE2 syntax is the same.
	re, err := regexp.Compile("^(?:" + m.GetRegex() + ")$")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return re, nil
}

func compileStringMatch(where string, m *matcherv3.StringMatcher) (*stringMatch, error) {
	if err := pbcheck.Unsupported(where, m, "exact", "prefix", "suffix", "contains", "safe_regex", "ignore_case"); err != nil {
		return nil, err
	}
	sm := &stringMatch{ignoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		sm.kind, sm.value = "exact", p.Exact
	case *matcherv3.StringMatcher_Prefix:
		sm.kind, sm.value = "prefix", p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		sm.kind, sm.value = "suffix", p.Suffix
	case *matcherv3.StringMatcher_Contains:
		sm.kind, sm.value = "contains", p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := compileRegex(where+": safe_regex", p.SafeRegex)
		if err != nil {
			return nil, err
		}
		sm.kind, sm.re = "regex", re
	default:
		return nil, fmt.Errorf("%s: a match pattern is required", where)
	}
	if sm.ignoreCase {
		sm.value = strings.ToLower(sm.value)
	}
	return sm, nil
}

func (sm *stringMatch) matches(v string) bool {
	if sm.kind == "regex" {
		return sm.re.MatchString(v) // ignore_case does not apply to regexes in Envoy
	}
	if sm.ignoreCase {
		v = strings.ToLower(v)
	}
	switch sm.kind {
	case "exact":
		return v == sm.value
	case "prefix":
		return strings.HasPrefix(v, sm.value)
	case "suffix":
		return strings.HasSuffix(v, sm.value)
	default:
		return strings.Contains(v, sm.value)
	}
}

var redirectCodes = map[routev3.RedirectAction_RedirectResponseCode]int{
	routev3.RedirectAction_MOVED_PERMANENTLY:  http.StatusMovedPermanently,
	routev3.RedirectAction_FOUND:              http.StatusFound,
	routev3.RedirectAction_SEE_OTHER:          http.StatusSeeOther,
	routev3.RedirectAction_TEMPORARY_REDIRECT: http.StatusTemporaryRedirect,
	routev3.RedirectAction_PERMANENT_REDIRECT: http.StatusPermanentRedirect,
}

func compileRedirect(where string, r *routev3.RedirectAction) (*redirectAction, error) {
	if err := pbcheck.Unsupported(where, r, "https_redirect", "scheme_redirect", "host_redirect", "port_redirect",
		"path_redirect", "prefix_rewrite", "response_code", "strip_query"); err != nil {
		return nil, err
	}
	ra := &redirectAction{host: r.GetHostRedirect(), port: r.GetPortRedirect(), stripQuery: r.GetStripQuery(),
		path: r.GetPathRedirect(), prefixRewrite: r.GetPrefixRewrite(), code: redirectCodes[r.GetResponseCode()]}
	if r.GetHttpsRedirect() {
		ra.scheme = "https"
	} else if s := r.GetSchemeRedirect(); s != "" {
		ra.scheme = strings.ToLower(s)
	}
	if r.GetPathRedirect() != "" && r.GetPrefixRewrite() != "" {
		return nil, fmt.Errorf("%s: path_redirect and prefix_rewrite are exclusive", where)
	}
	return ra, nil
}

func compileForward(where string, a *routev3.RouteAction) (*forwardAction, error) {
	if err := pbcheck.Unsupported(where, a, "cluster", "weighted_clusters", "prefix_rewrite", "regex_rewrite",
		"host_rewrite_literal", "timeout", "retry_policy", "hash_policy"); err != nil {
		return nil, err
	}
	fa := &forwardAction{timeout: defaultRouteTimeout}
	switch cs := a.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		fa.clusters = []weightedCluster{{name: cs.Cluster, weight: 1}}
	case *routev3.RouteAction_WeightedClusters:
		if err := pbcheck.Unsupported(where+": weighted_clusters", cs.WeightedClusters, "clusters"); err != nil {
			return nil, err
		}
		for i, c := range cs.WeightedClusters.GetClusters() {
			if err := pbcheck.Unsupported(fmt.Sprintf("%s: weighted_clusters.clusters[%d]", where, i), c, "name", "weight"); err != nil {
				return nil, err
			}
			fa.clusters = append(fa.clusters, weightedCluster{name: c.GetName(), weight: c.GetWeight().GetValue()})
		}
	default:
		return nil, fmt.Errorf("%s: cluster or weighted_clusters is required", where)
	}
	for _, c := range fa.clusters {
		if c.name == "" {
			return nil, fmt.Errorf("%s: a cluster name is empty", where)
		}
		fa.totalWeight += c.weight
	}
	if fa.totalWeight == 0 {
		return nil, fmt.Errorf("%s: weighted_clusters: the total weight is 0", where)
	}
	if a.GetPrefixRewrite() != "" {
		p := a.GetPrefixRewrite()
		fa.prefixRewrite = &p
	}
	if rr := a.GetRegexRewrite(); rr != nil {
		if fa.prefixRewrite != nil {
			return nil, fmt.Errorf("%s: prefix_rewrite and regex_rewrite are exclusive", where)
		}
		if err := pbcheck.Unsupported(where+": regex_rewrite", rr, "pattern", "substitution"); err != nil {
			return nil, err
		}
		if err := pbcheck.Unsupported(where+": regex_rewrite.pattern", rr.GetPattern(), "regex", "google_re2"); err != nil {
			return nil, err
		}
		// Envoy substitutes every match (not anchored) and writes groups as \1.
		re, err := regexp.Compile(rr.GetPattern().GetRegex())
		if err != nil {
			return nil, fmt.Errorf("%s: regex_rewrite.pattern: %w", where, err)
		}
		fa.regexRewrite = re
		fa.regexSubst = envoySubstitution.ReplaceAllString(strings.ReplaceAll(rr.GetSubstitution(), "$", "$$"), "$${$1}")
	}
	fa.hostRewrite = a.GetHostRewriteLiteral()
	if a.GetTimeout() != nil {
		fa.timeout = a.GetTimeout().AsDuration()
	}
	if rp := a.GetRetryPolicy(); rp != nil {
		// Without retry_on Envoy makes no retries; per_try_timeout still bounds the one try.
		var err error
		if fa.retry, err = compileRetryPolicy(where+": retry_policy", rp); err != nil {
			return nil, err
		}
	}
	for i, hp := range a.GetHashPolicy() {
		hw := fmt.Sprintf("%s: hash_policy[%d]", where, i)
		if err := pbcheck.Unsupported(hw, hp, "connection_properties"); err != nil {
			return nil, err
		}
		if !hp.GetConnectionProperties().GetSourceIp() {
			return nil, fmt.Errorf("%s: connection_properties.source_ip must be true", hw)
		}
		fa.hashSourceIP = true
	}
	return fa, nil
}

var envoySubstitution = regexp.MustCompile(`\\(\d)`)

func compileHeaderOps(where string, add []*corev3.HeaderValueOption, remove []string,
	respAdd []*corev3.HeaderValueOption, respRemove []string) (headerOps, error) {
	var ops headerOps
	var err error
	if ops.add, err = compileHeaderAdds(where+": request_headers_to_add", add); err != nil {
		return ops, err
	}
	if ops.respAdd, err = compileHeaderAdds(where+": response_headers_to_add", respAdd); err != nil {
		return ops, err
	}
	ops.remove, ops.respRemove = remove, respRemove
	for _, h := range append(slices.Clone(remove), respRemove...) {
		if strings.HasPrefix(h, ":") || strings.EqualFold(h, "host") {
			return ops, fmt.Errorf("%s: header %q cannot be removed", where, h)
		}
	}
	return ops, nil
}

func compileHeaderAdds(where string, hs []*corev3.HeaderValueOption) ([]headerAdd, error) {
	var out []headerAdd
	for i, h := range hs {
		hw := fmt.Sprintf("%s[%d]", where, i)
		if err := pbcheck.Unsupported(hw, h, "header", "append_action", "append"); err != nil {
			return nil, err
		}
		if err := pbcheck.Unsupported(hw+".header", h.GetHeader(), "key", "value"); err != nil {
			return nil, err
		}
		key := h.GetHeader().GetKey()
		if key == "" || strings.HasPrefix(key, ":") || strings.EqualFold(key, "host") {
			return nil, fmt.Errorf("%s.header.key %q cannot be set", hw, key)
		}
		action := h.GetAppendAction()
		if h.GetAppend() != nil { // the deprecated form
			action = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
			if !h.GetAppend().GetValue() {
				action = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
			}
		}
		out = append(out, headerAdd{key: key, value: h.GetHeader().GetValue(), action: action})
	}
	return out, nil
}

// apply changes h as Envoy does: removals, then additions by append action.
func applyHeaders(h http.Header, add []headerAdd, remove []string) {
	for _, k := range remove {
		h.Del(k)
	}
	for _, a := range add {
		_, exists := h[http.CanonicalHeaderKey(a.key)]
		switch a.action {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			h.Add(a.key, a.value)
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			if !exists {
				h.Set(a.key, a.value)
			}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			h.Set(a.key, a.value)
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			if exists {
				h.Set(a.key, a.value)
			}
		}
	}
}
