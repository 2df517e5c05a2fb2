package snapshot

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/model"
)

// A Route TLS entry with redirectHTTP makes its hostnames answer plain HTTP
// with a redirect to https, only while their certificate is served.
func TestRedirectHTTPFollowsTheCertificate(t *testing.T) {
	ta := &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "a"}}
	good := tlsSecret(t, "tenant-a", "good", "app.example.com")
	rt := accepted(&v1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: "r", Generation: 1}, Spec: v1.RouteSpec{
		Source:    v1.RouteSource{Kind: v1.SourceIngress, Cluster: "c", Namespace: "web", Name: "r", UID: "u"},
		Hostnames: []v1.Hostname{"app.example.com", "missing.example.com", "plain.example.com"},
		TLS: []v1.RouteTLS{
			{Hostnames: []v1.Hostname{"app.example.com"}, SecretName: "good", RedirectHTTP: true},
			{Hostnames: []v1.Hostname{"missing.example.com"}, SecretName: "missing", RedirectHTTP: true},
		},
		Rules: []v1.RouteRule{{Backends: []v1.RouteBackend{{ServiceName: "web", NodePort: 30002}}}},
	}}, "app.example.com", "missing.example.com", "plain.example.com")
	nodes := &v1.TenantNodes{Spec: v1.TenantNodesSpec{Cluster: "c", Nodes: []v1.TenantNode{{Name: "n1", Addresses: []v1.IPAddress{"127.0.1.1"}}}}}
	a := fromRoute(ta, rt, nodes, func(name string) *corev1.Secret {
		if name == "good" {
			return good
		}
		return nil
	})
	httpL := &model.SharedListener{VIP: netip.MustParseAddr("127.0.60.1"), Port: 80}
	httpsL := &model.SharedListener{VIP: netip.MustParseAddr("127.0.60.1"), Port: 443}

	redirects := func(vhosts []model.VirtualHost) map[string]bool {
		out := map[string]bool{}
		for _, v := range vhosts {
			out[v.Name] = v.RedirectToHTTPS
		}
		return out
	}
	got := redirects(hostsOnly(virtualHosts([]*admittedRoute{&a}, httpL, httpsL)))
	// The missing Secret serves its host on plain HTTP, never a redirect to nothing.
	if !got["app.example.com"] || got["missing.example.com"] || got["plain.example.com"] || len(got) != 3 {
		t.Errorf("redirects with HTTPS: %v", got)
	}
	if got := redirects(hostsOnly(virtualHosts([]*admittedRoute{&a}, httpL, nil))); got["app.example.com"] {
		t.Errorf("redirect without an HTTPS listener: %v", got)
	}
}

func hostsOnly(v []model.VirtualHost, _ []model.Backend) []model.VirtualHost { return v }
