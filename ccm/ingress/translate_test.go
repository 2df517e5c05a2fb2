package ingress

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// Pure mapping cases the envtest tests do not reach.

func fixedBackend(b *networkingv1.IngressBackend) (*v1.RouteBackend, error) {
	if b.Service == nil {
		return nil, errors.New("only Service backends are supported")
	}
	return &v1.RouteBackend{ServiceName: b.Service.Name, NodePort: 30000}, nil
}

func TestNoHostnameIsReportedNotServed(t *testing.T) {
	ing := &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "catchall"},
		Spec:       networkingv1.IngressSpec{DefaultBackend: ptr.To(backend("web", 80))},
	}
	routes, problems := desiredRoutes(ing, "c", fixedBackend)
	if len(routes) != 0 {
		t.Errorf("a host-less Ingress got routes %+v", routes)
	}
	if len(problems) != 1 || !strings.Contains(problems[0], "named hosts only") {
		t.Errorf("problems %q", problems)
	}
}

func TestTLSOnlyHostIsServedByTheDefaultBackend(t *testing.T) {
	ing := &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "tlsonly"},
		Spec: networkingv1.IngressSpec{
			DefaultBackend: ptr.To(backend("web", 80)),
			TLS:            []networkingv1.IngressTLS{{Hosts: []string{"a.example.com", "*.other.com"}, SecretName: "c"}},
		},
	}
	routes, problems := desiredRoutes(ing, "c", fixedBackend)
	if len(problems) != 0 || len(routes) != 1 {
		t.Fatalf("routes %+v problems %q", routes, problems)
	}
	s := routes[0].Spec
	if len(s.Hostnames) != 2 || s.Hostnames[1] != "*.other.com" || len(s.Rules) != 1 || s.Rules[0].Matches != nil || s.Rules[0].Backends[0].ServiceName != "web" {
		t.Errorf("spec %+v", s)
	}
	if len(s.TLS) != 1 || len(s.TLS[0].Hostnames) != 2 || s.TLS[0].SecretName != "ns.c" {
		t.Errorf("tls %+v", s.TLS)
	}
}

func TestProblemsDropOnlyTheirPath(t *testing.T) {
	ing := &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "bad", Annotations: map[string]string{v1.AnnotationStrategy: "random"}},
		Spec: networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{
			rule("Upper.example.com", path("/", networkingv1.PathTypePrefix, backend("web", 80))),
			rule("ok.example.com",
				path("/resource", networkingv1.PathTypePrefix, networkingv1.IngressBackend{Resource: &corev1.TypedLocalObjectReference{Kind: "Bucket", Name: "b"}}),
				path("/", networkingv1.PathTypePrefix, backend("web", 80))),
		}},
	}
	routes, problems := desiredRoutes(ing, "c", fixedBackend)
	if len(routes) != 1 || len(routes[0].Spec.Hostnames) != 1 || routes[0].Spec.Hostnames[0] != "ok.example.com" || len(routes[0].Spec.Rules) != 1 {
		t.Fatalf("routes %+v", routes)
	}
	if routes[0].Spec.Global != nil {
		t.Errorf("bad global annotation produced %+v", routes[0].Spec.Global)
	}
	want := []string{`host "Upper.example.com"`, "only Service backends", `"random" is not roundRobin`}
	if len(problems) != len(want) {
		t.Fatalf("problems %q", problems)
	}
	for i, w := range want {
		if !strings.Contains(problems[i], w) {
			t.Errorf("problem %d %q does not mention %q", i, problems[i], w)
		}
	}
}

func TestNames(t *testing.T) {
	if got := RouteName("ns", "web", "*.example.com"); got != "ingress.ns.web.wildcard.example.com" {
		t.Errorf("wildcard route name %q", got)
	}
	long := strings.Repeat("a", 250)
	n1, n2 := RouteName("ns", long), RouteName("ns", long+"b")
	if len(n1) > 253 || len(n2) > 253 || n1 == n2 {
		t.Errorf("long names %q %q", n1, n2)
	}
	if got := CompanionName("web"); got != "web-fleetlb" {
		t.Errorf("companion %q", got)
	}
	c1, c2 := CompanionName(strings.Repeat("s", 63)), CompanionName(strings.Repeat("s", 62))
	if len(c1) > 63 || len(c2) > 63 || c1 == c2 {
		t.Errorf("long companion names %q %q", c1, c2)
	}
	for _, tc := range []struct {
		pattern, host string
		want          bool
	}{{"*.example.com", "a.example.com", true}, {"*.example.com", "a.b.example.com", false}, {"*.example.com", "example.com", false},
		{"a.example.com", "a.example.com", true}, {"*.example.com", "*.example.com", true}} {
		if got := covers(tc.pattern, tc.host); got != tc.want {
			t.Errorf("covers(%q, %q) = %v", tc.pattern, tc.host, got)
		}
	}
}
