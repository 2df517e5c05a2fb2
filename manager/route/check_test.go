package route

import (
	"testing"

	"k8s.io/utils/ptr"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

func TestAllowedAndCovers(t *testing.T) {
	patterns := []v1.Hostname{"*.team-a.example.com", "exact.example.org"}
	for h, want := range map[v1.Hostname]bool{
		"www.team-a.example.com":   true,
		"a.b.team-a.example.com":   true, // any depth under the suffix
		"*.team-a.example.com":     true,
		"*.x.team-a.example.com":   true,
		"team-a.example.com":       false, // the suffix itself is not under it
		"www.team-ab.example.com":  false,
		"evilteam-a.example.com":   false,
		"exact.example.org":        true,
		"www.exact.example.org":    false,
		"*.example.com":            false,
		"www.team-a.example.com.x": false,
	} {
		if got := Allowed(patterns, h); got != want {
			t.Errorf("Allowed(%s) = %v, want %v", h, got, want)
		}
	}
	for _, c := range []struct {
		tls, h v1.Hostname
		want   bool
	}{
		{"a.example.com", "a.example.com", true},
		{"*.example.com", "a.example.com", true},
		{"*.example.com", "a.b.example.com", false}, // a wildcard certificate covers one label
		{"*.example.com", "example.com", false},
		{"*.example.com", "*.example.com", true},
		{"a.example.com", "b.example.com", false},
	} {
		if got := Covers(c.tls, c.h); got != c.want {
			t.Errorf("Covers(%s, %s) = %v, want %v", c.tls, c.h, got, c.want)
		}
	}
}

func TestCheckRule(t *testing.T) {
	be := []v1.RouteBackend{{NodePort: 30000}}
	redirect := v1.RouteFilter{Type: v1.FilterRequestRedirect, RequestRedirect: &v1.RequestRedirect{Scheme: "https"}}
	prefixRewrite := v1.RouteFilter{Type: v1.FilterURLRewrite, URLRewrite: &v1.URLRewrite{Path: &v1.PathModifier{Type: v1.ReplacePrefixMatch, Value: "/"}}}
	for name, c := range map[string]struct {
		rule v1.RouteRule
		want string
	}{
		"ok":                  {v1.RouteRule{Backends: be}, ""},
		"redirect only":       {v1.RouteRule{Filters: []v1.RouteFilter{redirect}}, ""},
		"no backends":         {v1.RouteRule{}, v1.ReasonInvalidBackend},
		"zero weights":        {v1.RouteRule{Backends: []v1.RouteBackend{{NodePort: 1, Weight: ptr.To[int32](0)}}}, v1.ReasonInvalidBackend},
		"no node port":        {v1.RouteRule{Backends: []v1.RouteBackend{{}}}, v1.ReasonInvalidBackend},
		"redirect + rewrite":  {v1.RouteRule{Backends: be, Filters: []v1.RouteFilter{redirect, prefixRewrite}}, v1.ReasonInvalidSpec},
		"prefix rewrite ok":   {v1.RouteRule{Backends: be, Filters: []v1.RouteFilter{prefixRewrite}, Matches: []v1.RouteMatch{{Path: &v1.PathMatch{Type: v1.PathPrefix, Value: "/a"}}}}, ""},
		"prefix rewrite bad":  {v1.RouteRule{Backends: be, Filters: []v1.RouteFilter{prefixRewrite}, Matches: []v1.RouteMatch{{Path: &v1.PathMatch{Type: v1.PathExact, Value: "/a"}}}}, v1.ReasonInvalidSpec},
		"bad regex":           {v1.RouteRule{Backends: be, Matches: []v1.RouteMatch{{Path: &v1.PathMatch{Type: v1.PathRegularExpression, Value: "(("}}}}, v1.ReasonInvalidSpec},
		"bad header regex":    {v1.RouteRule{Backends: be, Matches: []v1.RouteMatch{{Headers: []v1.HeaderMatch{{Name: "x", Type: v1.MatchRegularExpression, Value: "["}}}}}, v1.ReasonInvalidSpec},
		"filter without body": {v1.RouteRule{Backends: be, Filters: []v1.RouteFilter{{Type: v1.FilterRequestHeaderModifier}}}, v1.ReasonInvalidSpec},
	} {
		if got, msg := CheckRule(&c.rule); got != c.want {
			t.Errorf("%s: %q (%s), want %q", name, got, msg, c.want)
		}
	}
}
