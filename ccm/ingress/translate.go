package ingress

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/utils/ptr"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/ccm/secrets"
)

// Route API limits (api/v1alpha1/route_types.go).
const (
	maxHostnames = 64
	maxRules     = 64
	maxNameLen   = 253
)

// cert-manager's annotations on an Ingress; passed on as the TLS issuer.
const (
	annotationClusterIssuer = "cert-manager.io/cluster-issuer"
	annotationIssuer        = "cert-manager.io/issuer"
)

// AnnotationSSLRedirect on an Ingress: plain HTTP for its TLS hosts answers
// with a 301 to https by default (as ingress-nginx does); "false" serves them
// on plain HTTP too.
const AnnotationSSLRedirect = "fleetlb.io/ssl-redirect"

// sslRedirect reads AnnotationSSLRedirect: true unless it says "false".
func sslRedirect(ann map[string]string) (bool, error) {
	switch v, ok := ann[AnnotationSSLRedirect]; {
	case !ok || v == "true":
		return true, nil
	case v == "false":
		return false, nil
	default:
		return true, fmt.Errorf("annotation %s: %q is not true or false", AnnotationSSLRedirect, v)
	}
}

var hostnameRE = regexp.MustCompile(`^([*][.])?[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// RouteName is the management Route for an Ingress: `ingress.<namespace>.<name>`,
// and `ingress.<namespace>.<name>.<hostname>` for each further group of
// hostnames with rules of their own (see desiredRoutes).
func RouteName(namespace, name string, host ...string) string {
	parts := append([]string{"ingress", namespace, name}, host...)
	n := strings.ReplaceAll(strings.Join(parts, "."), "*", "wildcard")
	if len(n) <= maxNameLen {
		return n
	}
	// Too long for an object name: keep a readable head and make it unique with a hash.
	sum := sha256.Sum256([]byte(n))
	return n[:maxNameLen-17] + "-" + hex.EncodeToString(sum[:8])
}

// resolver turns an Ingress backend into a Route backend. An error is a
// problem the user must fix (reported, the path is dropped); nil, nil means
// not ready yet (dropped silently until an event brings the Ingress back).
type resolver func(b *networkingv1.IngressBackend) (*v1.RouteBackend, error)

// namedRoute is one desired Route.
type namedRoute struct {
	Name string
	Spec v1.RouteSpec
}

// desiredRoutes maps an Ingress onto Routes.
//
// A Route's rules apply to all of its hostnames, while an Ingress has rules per
// host. So every hostname gets its own rule list: its own paths (longest
// first, Exact before Prefix at equal length, as the Ingress API orders
// them), then the paths of host-less rules, then the defaultBackend as a
// catch-all. Hostnames whose lists are equal share one Route. In the common
// case (one host, or hosts with the same paths) that is exactly one Route,
// `ingress.<ns>.<name>`; each further group is named after its first hostname.
//
// The shared fleet serves named hosts only: host-less rules and the
// defaultBackend are served on the Ingress's hostnames (those of its rules and
// of spec.tls), never as a catch-all for every hostname on the VIP. An Ingress
// with no hostname at all gets no Route and a warning.
func desiredRoutes(ing *networkingv1.Ingress, cluster string, resolve resolver) (routes []namedRoute, problems []string) {
	problem := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	resolveOne := func(what string, b *networkingv1.IngressBackend) *v1.RouteBackend {
		rb, err := resolve(b)
		if err != nil {
			problem("%s: %v; not served", what, err)
		}
		return rb
	}
	pathRule := func(host string, p *networkingv1.HTTPIngressPath) *v1.RouteRule {
		m := &v1.PathMatch{Type: v1.PathPrefix, Value: p.Path}
		if p.PathType != nil && *p.PathType == networkingv1.PathTypeExact {
			m.Type = v1.PathExact
		}
		if m.Value == "" {
			m.Value = "/"
		}
		if !strings.HasPrefix(m.Value, "/") {
			problem("host %q path %q: a path must start with /; not served", host, p.Path)
			return nil
		}
		rb := resolveOne(fmt.Sprintf("host %q path %q", host, m.Value), &p.Backend)
		if rb == nil {
			return nil
		}
		return &v1.RouteRule{Matches: []v1.RouteMatch{{Path: m}}, Backends: []v1.RouteBackend{*rb}}
	}

	var hosts []string // in order of appearance
	perHost := map[string][]v1.RouteRule{}
	var anyHost []v1.RouteRule
	addHost := func(h string) bool {
		if !hostnameRE.MatchString(h) || len(h) > 253 {
			problem("host %q is not a lower-case DNS name or *.suffix wildcard; not served", h)
			return false
		}
		if _, ok := perHost[h]; !ok {
			hosts = append(hosts, h)
			perHost[h] = nil
		}
		return true
	}
	for _, rule := range ing.Spec.Rules {
		if rule.Host != "" && !addHost(rule.Host) {
			continue
		}
		if rule.HTTP == nil {
			continue
		}
		for i := range rule.HTTP.Paths {
			rr := pathRule(rule.Host, &rule.HTTP.Paths[i])
			if rr == nil {
				continue
			}
			if rule.Host == "" {
				anyHost = append(anyHost, *rr)
			} else {
				perHost[rule.Host] = append(perHost[rule.Host], *rr)
			}
		}
	}
	for _, t := range ing.Spec.TLS {
		for _, h := range t.Hosts {
			addHost(h)
		}
	}
	var fallback []v1.RouteRule
	if ing.Spec.DefaultBackend != nil {
		if rb := resolveOne("defaultBackend", ing.Spec.DefaultBackend); rb != nil {
			fallback = []v1.RouteRule{{Backends: []v1.RouteBackend{*rb}}}
		}
	}
	if len(hosts) == 0 {
		if len(anyHost) > 0 || ing.Spec.DefaultBackend != nil {
			problem("the fleet serves named hosts only: add a host to a rule or to spec.tls")
		}
		return nil, problems
	}
	sortByPrecedence(anyHost)

	// Group hostnames with equal rule lists, in order of first appearance.
	type group struct {
		hosts []v1.Hostname
		rules []v1.RouteRule
	}
	var groups []*group
	for _, h := range hosts {
		rules := slices.Clone(perHost[h])
		sortByPrecedence(rules)
		rules = append(append(rules, anyHost...), fallback...)
		if len(rules) == 0 {
			continue // every path of this host was dropped, and nothing else serves it
		}
		i := slices.IndexFunc(groups, func(g *group) bool { return equality.Semantic.DeepEqual(g.rules, rules) })
		if i < 0 {
			groups = append(groups, &group{rules: rules})
			i = len(groups) - 1
		}
		groups[i].hosts = append(groups[i].hosts, v1.Hostname(h))
	}

	global, err := globalOptions(ing.Annotations)
	if err != nil {
		problem("%v; served without global options", err)
	}
	issuer := issuerFrom(ing.Annotations)
	redirect, err := sslRedirect(ing.Annotations)
	if err != nil {
		problem("%v; plain HTTP redirects to https", err)
	}
	retry, err := retryFrom(ing.Annotations)
	if err != nil {
		problem("%v; the default retry policy applies", err)
	}
	for gi, g := range groups {
		if retry != nil {
			for i := range g.rules {
				g.rules[i].Retry = retry.DeepCopy()
			}
		}
		if len(g.hosts) > maxHostnames {
			problem("hosts %v: more than %d hostnames with the same paths; the rest is not served", g.hosts[maxHostnames:], maxHostnames)
			g.hosts = g.hosts[:maxHostnames]
		}
		if len(g.rules) > maxRules {
			problem("host %q: more than %d paths; the longest %d are served", g.hosts[0], maxRules, maxRules)
			g.rules = g.rules[:maxRules]
		}
		name := RouteName(ing.Namespace, ing.Name)
		if gi > 0 {
			name = RouteName(ing.Namespace, ing.Name, string(g.hosts[0]))
		}
		spec := v1.RouteSpec{
			Source: v1.RouteSource{
				Kind: v1.SourceIngress, Cluster: cluster, Namespace: ing.Namespace, Name: ing.Name,
				UID: string(ing.UID), Generation: ing.Generation,
			},
			Hostnames: g.hosts,
			TLS:       tlsFor(ing, g.hosts, issuer, redirect),
			Rules:     g.rules,
			Global:    global,
		}
		routes = append(routes, namedRoute{Name: name, Spec: spec})
	}
	return routes, problems
}

// sortByPrecedence orders path rules as the Ingress API ranks them: the
// longest path first, Exact before Prefix at equal length; otherwise stable.
func sortByPrecedence(rules []v1.RouteRule) {
	slices.SortStableFunc(rules, func(a, b v1.RouteRule) int {
		pa, pb := a.Matches[0].Path, b.Matches[0].Path
		if c := cmp.Compare(len(pb.Value), len(pa.Value)); c != 0 {
			return c
		}
		return cmp.Compare(exactFirst(pa.Type), exactFirst(pb.Type))
	})
}

func exactFirst(t v1.PathMatchType) int {
	if t == v1.PathExact {
		return 0
	}
	return 1
}

// covers reports whether the TLS host pattern covers hostname h.
func covers(pattern, h string) bool {
	if pattern == h {
		return true
	}
	suffix, ok := strings.CutPrefix(pattern, "*")
	if !ok || strings.HasPrefix(h, "*.") {
		return false
	}
	label, rest, _ := strings.Cut(h, ".")
	return label != "" && "."+rest == suffix
}

// tlsFor is the TLS of the Route serving hosts: each spec.tls entry with a
// Secret, limited to the hosts it covers (all of them when it lists none),
// pointing at the management copy of the Secret; redirect sends plain HTTP
// for those hosts to https.
func tlsFor(ing *networkingv1.Ingress, hosts []v1.Hostname, issuer *v1.IssuerRef, redirect bool) []v1.RouteTLS {
	var out []v1.RouteTLS
	for _, t := range ing.Spec.TLS {
		if t.SecretName == "" {
			continue
		}
		var covered []v1.Hostname
		for _, h := range hosts {
			if len(t.Hosts) == 0 || slices.ContainsFunc(t.Hosts, func(p string) bool { return covers(p, string(h)) }) {
				covered = append(covered, h)
			}
		}
		if len(covered) == 0 {
			continue
		}
		out = append(out, v1.RouteTLS{Hostnames: covered, SecretName: secrets.CopyName(ing.Namespace, t.SecretName), Issuer: issuer, RedirectHTTP: redirect})
	}
	return out
}

func issuerFrom(ann map[string]string) *v1.IssuerRef {
	if n := ann[annotationClusterIssuer]; n != "" {
		return &v1.IssuerRef{Kind: "ClusterIssuer", Name: n}
	}
	if n := ann[annotationIssuer]; n != "" {
		return &v1.IssuerRef{Kind: "Issuer", Name: n}
	}
	return nil
}

// globalOptions reads the multi-cluster annotations; a Route is joined with
// other clusters' Routes by hostname, so there is no name.
func globalOptions(ann map[string]string) (*v1.GlobalOptions, error) {
	strategy, weight, priority := ann[v1.AnnotationStrategy], ann[v1.AnnotationWeight], ann[v1.AnnotationPriority]
	if strategy == "" && weight == "" && priority == "" {
		return nil, nil
	}
	g := &v1.GlobalOptions{Strategy: v1.StrategyRoundRobin}
	switch s := v1.Strategy(strategy); s {
	case "":
	case v1.StrategyRoundRobin, v1.StrategyWeighted, v1.StrategyFailover:
		g.Strategy = s
	default:
		return nil, fmt.Errorf("annotation %s: %q is not roundRobin, weighted or failover", v1.AnnotationStrategy, strategy)
	}
	for _, kv := range []struct {
		key, val string
		dst      **int32
		max      int
	}{{v1.AnnotationWeight, weight, &g.Weight, 1000}, {v1.AnnotationPriority, priority, &g.Priority, 127}} {
		if kv.val == "" {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(kv.val))
		if err != nil || n < 0 || n > kv.max {
			return nil, fmt.Errorf("annotation %s: %q is not a number from 0 to %d", kv.key, kv.val, kv.max)
		}
		*kv.dst = ptr.To(int32(n))
	}
	return g, nil
}
