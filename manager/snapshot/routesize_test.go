package snapshot

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/envoy/translate"
	"github.com/fleetlb/fleetlb/internal/model"
	"github.com/fleetlb/fleetlb/manager/route"
)

// route.ConfigBytes, the admission's estimate, bounds the encoded size of
// the virtual hosts the translation makes of a Route, small or large, with
// and without TLS; and it is not wildly above it (the limit would bite early).
func TestConfigBytesBoundsTheTranslation(t *testing.T) {
	ta := &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "tenant-with-a-long-name"}}
	secret := tlsSecret(t, "tenant-tenant-with-a-long-name", "cert", "*.example.com")
	small := &v1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-tenant-with-a-long-name", Name: "small"}, Spec: v1.RouteSpec{
		Source:    v1.RouteSource{Kind: v1.SourceIngress, Cluster: "c", Namespace: "web", Name: "small", UID: "u"},
		Hostnames: []v1.Hostname{"a.example.com"},
		Rules:     []v1.RouteRule{{Backends: []v1.RouteBackend{{ServiceName: "web", NodePort: 30080}}}},
	}}
	big := small.DeepCopy()
	big.Name = "big"
	big.Spec.Hostnames = []v1.Hostname{"a.example.com", "b.example.com", "c.example.com", "d.example.com"}
	big.Spec.TLS = []v1.RouteTLS{{Hostnames: []v1.Hostname{"*.example.com"}, SecretName: "cert"}}
	big.Spec.Rules = nil
	for i := 0; i < 8; i++ {
		rule := v1.RouteRule{
			Timeouts: &v1.RouteTimeouts{Request: &metav1.Duration{Duration: 5 * time.Second}},
			Filters: []v1.RouteFilter{
				{Type: v1.FilterRequestHeaderModifier, RequestHeaderModifier: &v1.HeaderModifier{
					Set: []v1.HTTPHeader{{Name: "x-one", Value: strings.Repeat("v", 40)}, {Name: "x-two", Value: "2"}}, Remove: []string{"x-gone"}}},
				{Type: v1.FilterURLRewrite, URLRewrite: &v1.URLRewrite{Path: &v1.PathModifier{Type: v1.ReplacePrefixMatch, Value: "/v2"}}},
			},
		}
		for j := 0; j < 4; j++ {
			rule.Matches = append(rule.Matches, v1.RouteMatch{
				Path:        &v1.PathMatch{Type: v1.PathPrefix, Value: fmt.Sprintf("/api/%d/%d/%s", i, j, strings.Repeat("p", 60))},
				Headers:     []v1.HeaderMatch{{Name: "x-env", Value: "canary"}, {Name: "x-re", Type: v1.MatchRegularExpression, Value: "[a-z]+[0-9]*"}},
				QueryParams: []v1.HeaderMatch{{Name: "q", Value: "1"}},
				Method:      "GET",
			})
		}
		for k := 0; k < 8; k++ {
			rule.Backends = append(rule.Backends, v1.RouteBackend{ServiceName: fmt.Sprintf("service-%d-%s", k, strings.Repeat("s", 40)),
				NodePort: v1.PortNumber(30000 + k), Weight: ptr.To(int32(k + 1))})
		}
		big.Spec.Rules = append(big.Spec.Rules, rule)
	}
	for _, rt := range []*v1.Route{small, big} {
		accepted(rt, rt.Spec.Hostnames...)
		a := fromRoute(ta, rt, &v1.TenantNodes{}, func(string) *corev1.Secret { return secret })
		vip := netip.MustParseAddr("127.0.0.10")
		httpL, httpsL := &model.SharedListener{VIP: vip, Port: 80}, &model.SharedListener{VIP: vip, Port: 443}
		vhosts, backends := virtualHosts([]*admittedRoute{&a}, httpL, httpsL)
		out, err := translate.Translate(&model.Fleet{Name: "f", HTTP: httpL, HTTPS: httpsL, VirtualHosts: vhosts, Backends: append(a.backends, backends...), Certificates: a.certs})
		if err != nil {
			t.Fatal(err)
		}
		size := 0
		for _, r := range out.Routes {
			for _, vh := range r.(*routev3.RouteConfiguration).VirtualHosts {
				size += proto.Size(vh)
			}
		}
		est := route.ConfigBytes(ta.Name, rt, rt.Spec.Hostnames)
		t.Logf("%s: translated virtual hosts %d bytes, estimate %d", rt.Name, size, est)
		if est < size || est > 4*size {
			t.Errorf("%s: estimate %d bytes for %d bytes of virtual hosts; want between 1 and 4 times", rt.Name, est, size)
		}
	}
}
