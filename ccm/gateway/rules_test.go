package gateway

import (
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
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

// An HTTPRoute rule's retry (experimental channel) becomes the Route rule's
// retry: connection errors plus its codes, its attempts (capped at 5, with
// a message); a rule without retry keeps the fleet's default.
func TestHTTPRetryMapping(t *testing.T) {
	be := []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "a"}}}}
	path := func(p string) []gwv1.HTTPRouteMatch {
		return []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: ptr.To(gwv1.PathMatchPathPrefix), Value: ptr.To(p)}}}
	}
	backoff := gwv1.Duration("100ms")
	spec := &gwv1.HTTPRouteSpec{Rules: []gwv1.HTTPRouteRule{
		{Matches: path("/codes"), BackendRefs: be, Retry: &gwv1.HTTPRouteRetry{Codes: []gwv1.HTTPRouteRetryStatusCode{502, 503, 502}, Attempts: ptr.To(3), Backoff: &backoff}},
		{Matches: path("/many"), BackendRefs: be, Retry: &gwv1.HTTPRouteRetry{Attempts: ptr.To(9)}},
		{Matches: path("/plain"), BackendRefs: be},
	}}
	rules, problems := httpRules(spec, func(ref gwv1.BackendObjectReference, w *int32, p v1.BackendProtocol) (*v1.RouteBackend, *problem) {
		return &v1.RouteBackend{ServiceName: string(ref.Name), NodePort: 30000}, nil
	})
	got := map[string]*v1.RouteRetry{}
	for _, r := range rules {
		got[r.Matches[0].Path.Value] = r.Retry
	}
	conn := []v1.RetryOn{v1.RetryOnConnectFailure, v1.RetryOnRefusedStream, v1.RetryOnReset}
	want := map[string]*v1.RouteRetry{
		"/codes": {Attempts: 3, RetryOn: append(slices.Clone(conn), v1.RetryOnRetriableStatusCodes), StatusCodes: []v1.RetryStatusCode{502, 503}},
		"/many":  {Attempts: 5, RetryOn: conn},
		"/plain": nil,
	}
	if !equality.Semantic.DeepEqual(got, want) {
		t.Errorf("retries %+v, want %+v", got, want)
	}
	if len(problems) != 1 || !strings.Contains(problems[0].msg, "retry attempts 9: at most 5") {
		t.Errorf("problems %+v", problems)
	}
}
