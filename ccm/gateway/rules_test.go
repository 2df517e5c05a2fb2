package gateway

import (
	"testing"

	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// Pure mapping cases the envtest tests do not reach.

func TestHostnameIntersection(t *testing.T) {
	for _, tc := range []struct{ listener, route, want string }{
		{"", "a.example.com", "a.example.com"},
		{"a.example.com", "", "a.example.com"},
		{"*.example.com", "a.b.example.com", "a.b.example.com"}, // Gateway API wildcards match any depth
		{"*.example.com", "example.com", ""},
		{"a.example.com", "*.example.com", "a.example.com"},
		{"*.example.com", "*.a.example.com", "*.a.example.com"},
		{"*.a.example.com", "*.example.com", "*.a.example.com"},
		{"a.example.com", "b.example.com", ""},
		{"*.example.com", "*.example.org", ""},
	} {
		if got := hostnameMatch(tc.listener, tc.route); got != tc.want {
			t.Errorf("hostnameMatch(%q, %q) = %q, want %q", tc.listener, tc.route, got, tc.want)
		}
	}
}

func TestGRPCMethodMatches(t *testing.T) {
	for _, tc := range []struct {
		m    gwv1.GRPCMethodMatch
		want v1.PathMatch
	}{
		{gwv1.GRPCMethodMatch{Service: ptr.To("pkg.Svc"), Method: ptr.To("Do")}, v1.PathMatch{Type: v1.PathExact, Value: "/pkg.Svc/Do"}},
		{gwv1.GRPCMethodMatch{Service: ptr.To("pkg.Svc")}, v1.PathMatch{Type: v1.PathPrefix, Value: "/pkg.Svc"}},
		{gwv1.GRPCMethodMatch{Method: ptr.To("Do")}, v1.PathMatch{Type: v1.PathRegularExpression, Value: `/[^/]+/Do`}},
		{gwv1.GRPCMethodMatch{Type: ptr.To(gwv1.GRPCMethodMatchRegularExpression), Service: ptr.To(`pkg\..*`), Method: ptr.To("Do.*")},
			v1.PathMatch{Type: v1.PathRegularExpression, Value: `/pkg\..*/Do.*`}},
	} {
		got := grpcMatch(gwv1.GRPCRouteMatch{Method: &tc.m})
		if *got.Path != tc.want {
			t.Errorf("%+v → %+v, want %+v", tc.m, *got.Path, tc.want)
		}
	}
}

func TestUnsupportedFilterDropsOnlyItsRule(t *testing.T) {
	spec := &gwv1.HTTPRouteSpec{Rules: []gwv1.HTTPRouteRule{
		{Filters: []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterRequestMirror}},
			BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "a"}}}}},
		{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "b"}}}}},
	}}
	rules, problems := httpRules(spec, func(ref gwv1.BackendObjectReference, w *int32, p v1.BackendProtocol) (*v1.RouteBackend, *problem) {
		return &v1.RouteBackend{ServiceName: string(ref.Name), NodePort: 30000}, nil
	})
	if len(rules) != 1 || rules[0].Backends[0].ServiceName != "b" || rules[0].Matches[0].Path.Value != "/" {
		t.Errorf("rules %+v", rules)
	}
	if len(problems) != 1 || problems[0].reason != gwv1.RouteReasonUnsupportedValue {
		t.Errorf("problems %+v", problems)
	}
}
