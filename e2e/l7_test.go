package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/ccm/ingress"
	"github.com/fleetlb/fleetlb/e2e/harness"
	"github.com/fleetlb/fleetlb/internal/echo"
	"github.com/fleetlb/fleetlb/internal/testcerts"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// testCA issues serving certificates as kubernetes.io/tls Secrets.
type testCA struct{ *testcerts.CA }

func newTestCA(t *testing.T) *testCA { return &testCA{check(testcerts.NewCA())(t)} }

// secret is a kubernetes.io/tls Secret in "default" for hosts, and its serial.
func (ca *testCA) secret(t *testing.T, name string, hosts ...string) (*corev1.Secret, *big.Int) {
	t.Helper()
	s, sn, err := ca.Secret("default", name, hosts...)
	if err != nil {
		t.Fatal(err)
	}
	return s, sn
}

func clusterIPService(name string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}}}
}

func ingressOf(name, host, tlsSecret string, paths map[string]string) *networkingv1.Ingress {
	ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: networkingv1.IngressSpec{IngressClassName: ptr.To("fleetlb")}}
	rule := networkingv1.IngressRule{Host: host, IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{}}}
	for p, svc := range paths {
		rule.HTTP.Paths = append(rule.HTTP.Paths, networkingv1.HTTPIngressPath{Path: p, PathType: ptr.To(networkingv1.PathTypePrefix),
			Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: svc, Port: networkingv1.ServiceBackendPort{Number: 80}}}})
	}
	ing.Spec.Rules = []networkingv1.IngressRule{rule}
	if tlsSecret != "" {
		ing.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{host}, SecretName: tlsSecret}}
		// These scenarios send plain HTTP to TLS hosts too; by default it
		// would be redirected to https (TestL7... checks that).
		ing.Annotations = map[string]string{ingress.AnnotationSSLRedirect: "false"}
	}
	return ing
}

func serveCompanion(t *testing.T, tc *harness.Tenant, svc string, nodes map[string]string) {
	t.Helper()
	if err := tc.ServeCompanion("default", svc, nodes, 60*time.Second); err != nil {
		t.Fatal(err)
	}
}

type l7Reply struct {
	status   int
	location string
	reply    echo.Reply
}

// httpVia sends a request for url to addr (curl --resolve style).
func httpVia(addr, url string, tlsConf *tls.Config, header ...string) (l7Reply, error) {
	d := &net.Dialer{Timeout: 2 * time.Second}
	c := &http.Client{Timeout: 5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{TLSClientConfig: tlsConf, ForceAttemptHTTP2: tlsConf != nil, DisableKeepAlives: true,
			DialContext: func(ctx context.Context, n, _ string) (net.Conn, error) { return d.DialContext(ctx, n, addr) }}}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return l7Reply{}, err
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return l7Reply{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := l7Reply{status: resp.StatusCode, location: resp.Header.Get("Location")}
	if resp.Header.Get("X-Echo-Node") != "" {
		if err := json.Unmarshal(b, &r.reply); err != nil {
			return r, err
		}
	}
	return r, nil
}

// reaches waits until url through addr is answered by the given tenant cluster and Service.
func reaches(t *testing.T, addr, url string, tlsConf *tls.Config, cluster, service string, header ...string) l7Reply {
	t.Helper()
	var last l7Reply
	eventually(t, url+" → "+cluster+" "+service, 60*time.Second, func() error {
		r, err := httpVia(addr, url, tlsConf, header...)
		if err != nil {
			return err
		}
		last = r
		if r.status != 200 || r.reply.Cluster != cluster || r.reply.Service != service {
			return fmt.Errorf("status %d from %s %s", r.status, r.reply.Cluster, r.reply.Service)
		}
		return nil
	})
	return last
}

func ingressEvent(t *testing.T, tc *harness.Tenant, name, reason string) {
	t.Helper()
	eventually(t, reason+" event on Ingress "+name, 60*time.Second, func() error {
		var evs corev1.EventList
		if err := tc.Env.Client.List(context.Background(), &evs, client.InNamespace("default")); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.Kind == "Ingress" && e.InvolvedObject.Name == name && strings.Contains(e.Reason+" "+e.Message, reason) {
				return nil
			}
		}
		return fmt.Errorf("no %s event on Ingress %s", reason, name)
	})
}

// TestL7IngressGatewayTLSAndDNS: two tenants' Ingresses on the fleet's shared
// VIP and Gateway API routes on their Gateways' own VIPs, HTTPS by SNI from tenant Secrets, certificate rotation,
// hostname ownership, DNS records and clean deletion, through the real binaries.
func TestL7IngressGatewayTLSAndDNS(t *testing.T) {
	h := newHarness(t)
	f := check(h.StartFleet("127.0.80.1-127.0.80.8"))(t)
	check(f.StartProxy(true))(t)
	a := check(f.AddTenantWith("a", v1.TenantSpec{AddressPool: "vips",
		Hostnames: []v1.Hostname{"*.a.example.com", "*.shared.example.com"}}))(t)
	b := check(f.AddTenantWith("b", v1.TenantSpec{AddressPool: "vips",
		Hostnames: []v1.Hostname{"*.b.example.com", "*.shared.example.com"}}))(t)
	if err := gwv1.Install(a.Env.Scheme); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	aNodes, bNodes := map[string]string{"a-1": "127.0.7.1"}, map[string]string{"b-1": "127.0.8.1"}
	if err := a.AddNode("a-1", "127.0.7.1", "z1"); err != nil {
		t.Fatal(err)
	}
	if err := b.AddNode("b-1", "127.0.8.1", "z1"); err != nil {
		t.Fatal(err)
	}

	var vip string
	eventually(t, "the fleet's shared VIP", 60*time.Second, func() error {
		var pf v1.ProxyFleet
		if err := f.Mgmt.Client.Get(ctx, client.ObjectKey{Name: v1.DefaultFleetName}, &pf); err != nil {
			return err
		}
		if len(pf.Status.Addresses) != 1 {
			return fmt.Errorf("addresses %+v", pf.Status.Addresses)
		}
		vip = string(pf.Status.Addresses[0].IP)
		return nil
	})
	httpAddr := netip.AddrPortFrom(netip.MustParseAddr(vip), harness.HTTPPort).String()
	httpsAddr := netip.AddrPortFrom(netip.MustParseAddr(vip), harness.HTTPSPort).String()

	ca := newTestCA(t)
	aSecret, _ := ca.secret(t, "a-tls", "web.a.example.com")
	bSecret, _ := ca.secret(t, "b-tls", "shop.b.example.com")
	for _, o := range []client.Object{clusterIPService("web"), clusterIPService("api"), aSecret,
		ingressOf("web", "web.a.example.com", "a-tls", map[string]string{"/": "web", "/api": "api"})} {
		if err := a.Env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	for _, o := range []client.Object{clusterIPService("shop"), bSecret, ingressOf("shop", "shop.b.example.com", "b-tls", map[string]string{"/": "shop"})} {
		if err := b.Env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	serveCompanion(t, a, "web", aNodes)
	serveCompanion(t, a, "api", aNodes)
	serveCompanion(t, b, "shop", bNodes)

	t.Run("the Ingress gets the fleet's address", func(t *testing.T) {
		eventually(t, "Ingress status", 60*time.Second, func() error {
			var ing networkingv1.Ingress
			if err := a.Env.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: "web"}, &ing); err != nil {
				return err
			}
			// With the ports the fleet serves it on (TLS: HTTP and HTTPS), not 80 and 443.
			wantPorts := []networkingv1.IngressPortStatus{{Port: harness.HTTPPort, Protocol: corev1.ProtocolTCP}, {Port: harness.HTTPSPort, Protocol: corev1.ProtocolTCP}}
			if lb := ing.Status.LoadBalancer.Ingress; len(lb) != 1 || lb[0].IP != vip || !slices.EqualFunc(lb[0].Ports, wantPorts, func(a, b networkingv1.IngressPortStatus) bool {
				return a.Port == b.Port && a.Protocol == b.Protocol && a.Error == nil
			}) {
				return fmt.Errorf("status %+v, want %s with ports %+v", lb, vip, wantPorts)
			}
			return nil
		})
	})

	t.Run("host and path routing for two tenants on the shared VIP", func(t *testing.T) {
		reaches(t, httpAddr, "http://web.a.example.com/", nil, "a", "default/web-fleetlb")
		reaches(t, httpAddr, "http://web.a.example.com/api/v1", nil, "a", "default/api-fleetlb")
		reaches(t, httpAddr, "http://shop.b.example.com/cart", nil, "b", "default/shop-fleetlb")
		if r, err := httpVia(httpAddr, "http://unknown.example.org/", nil); err != nil || r.status != 404 {
			t.Errorf("unknown host: %+v %v, want 404", r, err)
		}
	})

	tlsFor := &tls.Config{RootCAs: ca.Pool}
	t.Run("HTTPS with each tenant's certificate, verified against the CA", func(t *testing.T) {
		reaches(t, httpsAddr, "https://web.a.example.com/", tlsFor, "a", "default/web-fleetlb")
		r := reaches(t, httpsAddr, "https://shop.b.example.com/", tlsFor, "b", "default/shop-fleetlb")
		if r.reply.Headers["X-Forwarded-Proto"][0] != "https" {
			t.Errorf("X-Forwarded-Proto %v", r.reply.Headers["X-Forwarded-Proto"])
		}
	})

	t.Run("plain HTTP to a TLS host redirects to https unless ssl-redirect is false", func(t *testing.T) {
		var ing networkingv1.Ingress
		if err := b.Env.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: "shop"}, &ing); err != nil {
			t.Fatal(err)
		}
		delete(ing.Annotations, ingress.AnnotationSSLRedirect)
		if err := b.Env.Client.Update(ctx, &ing); err != nil {
			t.Fatal(err)
		}
		// The fleet serves HTTPS on harness.HTTPSPort (not 443): Location names it.
		wantLocation := fmt.Sprintf("https://shop.b.example.com:%d/cart?x=1", harness.HTTPSPort)
		eventually(t, "a redirect to https", 60*time.Second, func() error {
			r, err := httpVia(httpAddr, "http://shop.b.example.com/cart?x=1", nil)
			if err != nil {
				return err
			}
			if r.status != http.StatusMovedPermanently || r.location != wantLocation {
				return fmt.Errorf("status %d location %q, want 301 %q", r.status, r.location, wantLocation)
			}
			return nil
		})
		// Following it (the name resolved to the VIP, the port from Location) reaches the Service.
		loc, err := url.Parse(wantLocation)
		if err != nil {
			t.Fatal(err)
		}
		followed := reaches(t, net.JoinHostPort(vip, loc.Port()), wantLocation, tlsFor, "b", "default/shop-fleetlb")
		if followed.reply.Path != "/cart" {
			t.Errorf("the followed redirect reached path %q, want /cart", followed.reply.Path)
		}
		// HTTPS still serves it, and the other tenant's host (ssl-redirect false) still answers plain HTTP.
		reaches(t, httpsAddr, "https://shop.b.example.com/", tlsFor, "b", "default/shop-fleetlb")
		reaches(t, httpAddr, "http://web.a.example.com/", nil, "a", "default/web-fleetlb")
	})

	t.Run("certificate rotation keeps other hostnames' connections", func(t *testing.T) {
		conn := check(tls.Dial("tcp", httpsAddr, &tls.Config{ServerName: "shop.b.example.com", RootCAs: ca.Pool, NextProtos: []string{"http/1.1"}}))(t)
		defer conn.Close()
		rotated, serial := ca.secret(t, "a-tls", "web.a.example.com")
		var cur corev1.Secret
		if err := a.Env.Client.Get(ctx, client.ObjectKeyFromObject(rotated), &cur); err != nil {
			t.Fatal(err)
		}
		cur.Data = rotated.Data
		if err := a.Env.Client.Update(ctx, &cur); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the rotated certificate is served", 60*time.Second, func() error {
			c, err := tls.Dial("tcp", httpsAddr, &tls.Config{ServerName: "web.a.example.com", RootCAs: ca.Pool})
			if err != nil {
				return err
			}
			defer c.Close()
			if got := c.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(serial) != 0 {
				return fmt.Errorf("serial %v, want %v", got, serial)
			}
			return nil
		})
		// The connection opened before the rotation still carries requests.
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := fmt.Fprintf(conn, "GET /held HTTP/1.1\r\nHost: shop.b.example.com\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		line := make([]byte, 12)
		if _, err := io.ReadFull(conn, line); err != nil || string(line) != "HTTP/1.1 200" {
			t.Errorf("held connection after rotation: %q %v", line, err)
		}
	})

	t.Run("a hostname of another tenant is refused on the claimant's own Ingress", func(t *testing.T) {
		if err := b.Env.Client.Create(ctx, ingressOf("steal", "web.a.example.com", "", map[string]string{"/": "shop"})); err != nil {
			t.Fatal(err)
		}
		ingressEvent(t, b, "steal", v1.ReasonHostnameNotAllowed)
		if err := a.Env.Client.Create(ctx, ingressOf("first", "x.shared.example.com", "", map[string]string{"/": "web"})); err != nil {
			t.Fatal(err)
		}
		reaches(t, httpAddr, "http://x.shared.example.com/", nil, "a", "default/web-fleetlb")
		if err := b.Env.Client.Create(ctx, ingressOf("second", "x.shared.example.com", "", map[string]string{"/": "shop"})); err != nil {
			t.Fatal(err)
		}
		ingressEvent(t, b, "second", v1.ReasonHostnameConflict)
		for range 10 {
			r := reaches(t, httpAddr, "http://x.shared.example.com/", nil, "a", "default/web-fleetlb")
			_ = r
		}
		reaches(t, httpAddr, "http://web.a.example.com/", nil, "a", "default/web-fleetlb")
	})

	t.Run("a DNSEndpoint follows the accepted hostname", func(t *testing.T) {
		eventually(t, "DNSEndpoint for web.a.example.com", 60*time.Second, func() error {
			return dnsRecord(ctx, f, "web.a.example.com", vip)
		})
	})

	t.Run("Gateway and HTTPRoute: header match, weights, redirect, rewrite", func(t *testing.T) {
		gw := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "gw"}, Spec: gwv1.GatewaySpec{
			GatewayClassName: "fleetlb",
			Listeners:        []gwv1.Listener{{Name: "http", Port: harness.HTTPPort, Protocol: gwv1.HTTPProtocolType, Hostname: ptr.To(gwv1.Hostname("*.a.example.com"))}},
		}}
		backend := func(name string, weight int32) gwv1.HTTPBackendRef {
			return gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{Weight: ptr.To(weight), BackendObjectReference: gwv1.BackendObjectReference{
				Name: gwv1.ObjectName(name), Port: ptr.To(gwv1.PortNumber(80))}}}
		}
		prefix := func(p string) []gwv1.HTTPRouteMatch {
			return []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: ptr.To(gwv1.PathMatchPathPrefix), Value: ptr.To(p)}}}
		}
		hr := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "gw-routes"}, Spec: gwv1.HTTPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "gw"}}},
			Hostnames:       []gwv1.Hostname{"gw.a.example.com"},
			Rules: []gwv1.HTTPRouteRule{
				{Matches: []gwv1.HTTPRouteMatch{{Headers: []gwv1.HTTPHeaderMatch{{Name: "X-Canary", Value: "yes"}}}}, BackendRefs: []gwv1.HTTPBackendRef{backend("api", 1)}},
				{Matches: prefix("/old"), Filters: []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterRequestRedirect, RequestRedirect: &gwv1.HTTPRequestRedirectFilter{
					Hostname: ptr.To(gwv1.PreciseHostname("web.a.example.com")), StatusCode: ptr.To(301)}}}},
				{Matches: prefix("/v1"), Filters: []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterURLRewrite, URLRewrite: &gwv1.HTTPURLRewriteFilter{
					Path: &gwv1.HTTPPathModifier{Type: gwv1.PrefixMatchHTTPPathModifier, ReplacePrefixMatch: ptr.To("/v2")}}}},
					BackendRefs: []gwv1.HTTPBackendRef{backend("web", 1)}},
				{Matches: prefix("/"), BackendRefs: []gwv1.HTTPBackendRef{backend("web", 50), backend("api", 50)}},
			},
		}}
		for _, o := range []client.Object{gw, hr} {
			if err := a.Env.Client.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
		// The Gateway's own VIP, not the shared one.
		httpAddr := netip.AddrPortFrom(gatewayAddress(t, a, "gw"), harness.HTTPPort).String()
		reaches(t, httpAddr, "http://gw.a.example.com/", nil, "a", "default/api-fleetlb", "X-Canary", "yes")
		r := reaches(t, httpAddr, "http://gw.a.example.com/v1/items", nil, "a", "default/web-fleetlb")
		if r.reply.Path != "/v2/items" {
			t.Errorf("rewrite: upstream path %q, want /v2/items", r.reply.Path)
		}
		red, err := httpVia(httpAddr, "http://gw.a.example.com/old/page", nil)
		if err != nil || red.status != 301 || !strings.HasPrefix(red.location, "http://web.a.example.com") || !strings.HasSuffix(red.location, "/old/page") {
			t.Errorf("redirect: %+v %v", red, err)
		}
		seen := map[string]int{}
		for range 60 {
			r, err := httpVia(httpAddr, "http://gw.a.example.com/split", nil)
			if err != nil {
				t.Fatal(err)
			}
			seen[r.reply.Service]++
		}
		if seen["default/web-fleetlb"] < 10 || seen["default/api-fleetlb"] < 10 {
			t.Errorf("50/50 weights over 60 requests gave %v", seen)
		}
		eventually(t, "HTTPRoute parent status Accepted", 30*time.Second, func() error {
			var got gwv1.HTTPRoute
			if err := a.Env.Client.Get(ctx, client.ObjectKeyFromObject(hr), &got); err != nil {
				return err
			}
			return parentAccepted(got.Status.Parents, got.Generation)
		})
		for _, o := range []client.Object{hr, gw} {
			if err := a.Env.Client.Delete(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("GRPCRoute to a gRPC backend", func(t *testing.T) {
		gw := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "grpc-gw"}, Spec: gwv1.GatewaySpec{
			GatewayClassName: "fleetlb",
			Listeners:        []gwv1.Listener{{Name: "http", Port: harness.HTTPPort, Protocol: gwv1.HTTPProtocolType, Hostname: ptr.To(gwv1.Hostname("grpc.a.example.com"))}},
		}}
		gr := &gwv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "health"}, Spec: gwv1.GRPCRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "grpc-gw"}}},
			Rules: []gwv1.GRPCRouteRule{{
				Matches:     []gwv1.GRPCRouteMatch{{Method: &gwv1.GRPCMethodMatch{Service: ptr.To("grpc.health.v1.Health")}}},
				BackendRefs: []gwv1.GRPCBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "grpc", Port: ptr.To(gwv1.PortNumber(80))}}}},
			}},
		}}
		for _, o := range []client.Object{clusterIPService("grpc"), gw, gr} {
			if err := a.Env.Client.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
		if err := a.ServeCompanionAs("default", "grpc", "grpc", aNodes, 60*time.Second); err != nil {
			t.Fatal(err)
		}
		httpAddr := netip.AddrPortFrom(gatewayAddress(t, a, "grpc-gw"), harness.HTTPPort).String()
		conn := check(grpc.NewClient("passthrough:///"+httpAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithAuthority("grpc.a.example.com")))(t)
		defer conn.Close()
		backend := echo.Identity{Cluster: "a", Node: "a-1", Service: "default/grpc-fleetlb"}.GRPCService()
		eventually(t, "gRPC health check through the VIP answered by tenant a's backend", 60*time.Second, func() error {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			r, err := healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{Service: backend})
			if err != nil {
				return err
			}
			if r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				return fmt.Errorf("status %v", r.GetStatus())
			}
			return nil
		})
		// A gRPC error status comes back as the backend sent it (trailers-only).
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if _, err := healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{Service: "someone/else"}); status.Code(err) != codes.NotFound {
			t.Errorf("unknown health service: %v, want NotFound from the backend", err)
		}
		eventually(t, "GRPCRoute parent status Accepted", 30*time.Second, func() error {
			var got gwv1.GRPCRoute
			if err := a.Env.Client.Get(ctx, client.ObjectKeyFromObject(gr), &got); err != nil {
				return err
			}
			return parentAccepted(got.Status.Parents, got.Generation)
		})
		for _, o := range []client.Object{gr, gw} {
			if err := a.Env.Client.Delete(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("cert-manager: a Certificate for an annotated Ingress, its Secret served", func(t *testing.T) {
		ing := ingressOf("cm", "cm.a.example.com", "cm-tls", map[string]string{"/": "web"})
		ing.Annotations = map[string]string{"cert-manager.io/cluster-issuer": "letsencrypt"}
		if err := a.Env.Client.Create(ctx, ing); err != nil {
			t.Fatal(err)
		}
		ns, name := tenant.Namespace("a"), "default.cm-tls" // the Secret name in the management cluster
		var cert cmv1.Certificate
		eventually(t, "a Certificate for cm.a.example.com", 60*time.Second, func() error {
			if err := f.Mgmt.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &cert); err != nil {
				return err
			}
			if !slices.Equal(cert.Spec.DNSNames, []string{"cm.a.example.com"}) || cert.Spec.IssuerRef.Name != "letsencrypt" || cert.Spec.IssuerRef.Kind != "ClusterIssuer" {
				return fmt.Errorf("spec %+v", cert.Spec)
			}
			return nil
		})
		// Play the issuer: write the Secret the Certificate names.
		issued, _, err := ca.Secret(ns, cert.Spec.SecretName, cert.Spec.DNSNames...)
		if err != nil {
			t.Fatal(err)
		}
		issued.Annotations = map[string]string{cmv1.CertificateNameKey: cert.Name}
		if err := f.Mgmt.Client.Create(ctx, issued); err != nil {
			t.Fatal(err)
		}
		reaches(t, httpsAddr, "https://cm.a.example.com/", tlsFor, "a", "default/web-fleetlb")

		if err := a.Env.Client.Delete(ctx, ing); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the Certificate and its Secret go with the Ingress", 60*time.Second, func() error {
			for _, o := range []client.Object{&cmv1.Certificate{}, &corev1.Secret{}} {
				if err := f.Mgmt.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, o); !apierrors.IsNotFound(err) {
					return fmt.Errorf("%T still there (%v)", o, err)
				}
			}
			return nil
		})
	})

	t.Run("deleting the Ingress removes route, Secret copy, companions and DNS record", func(t *testing.T) {
		for _, name := range []string{"web", "first"} {
			if err := a.Env.Client.Delete(ctx, &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}}); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, "web.a.example.com is no longer served", 60*time.Second, func() error {
			r, err := httpVia(httpAddr, "http://web.a.example.com/", nil)
			if err != nil {
				return err
			}
			if r.status != 404 {
				return fmt.Errorf("status %d", r.status)
			}
			return nil
		})
		eventually(t, "tenant a's Routes and Secret copies are gone", 60*time.Second, func() error {
			var routes v1.RouteList
			if err := f.Mgmt.Client.List(ctx, &routes, client.InNamespace(tenant.Namespace("a"))); err != nil {
				return err
			}
			if len(routes.Items) != 0 {
				return fmt.Errorf("%d Routes left", len(routes.Items))
			}
			var secs corev1.SecretList
			if err := f.Mgmt.Client.List(ctx, &secs, client.InNamespace(tenant.Namespace("a"))); err != nil {
				return err
			}
			for _, s := range secs.Items {
				if s.Type == corev1.SecretTypeTLS {
					return fmt.Errorf("TLS Secret %s left", s.Name)
				}
			}
			return nil
		})
		eventually(t, "companions are gone", 60*time.Second, func() error {
			for _, svc := range []string{"web-fleetlb", "api-fleetlb"} {
				err := a.Env.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: svc}, &corev1.Service{})
				if !apierrors.IsNotFound(err) {
					return fmt.Errorf("%s: %v", svc, err)
				}
			}
			return nil
		})
		eventually(t, "the DNS record is gone", 60*time.Second, func() error {
			if err := dnsRecord(ctx, f, "web.a.example.com", vip); err == nil {
				return fmt.Errorf("still published")
			}
			return nil
		})
		// The other tenant's hostname with the now free claim is served by b.
		reaches(t, httpAddr, "http://x.shared.example.com/", nil, "b", "default/shop-fleetlb")
		reaches(t, httpsAddr, "https://shop.b.example.com/", tlsFor, "b", "default/shop-fleetlb")
	})
}

// dnsRecord finds a DNSEndpoint record for host pointing at target.
func dnsRecord(ctx context.Context, f *harness.Fleet, host, target string) error {
	var list unstructured.UnstructuredList
	list.SetGroupVersionKind(schema.GroupVersionKind{Group: "externaldns.k8s.io", Version: "v1alpha1", Kind: "DNSEndpointList"})
	if err := f.Mgmt.Client.List(ctx, &list); err != nil {
		return err
	}
	for _, o := range list.Items {
		eps, _, _ := unstructured.NestedSlice(o.Object, "spec", "endpoints")
		for _, e := range eps {
			m, _ := e.(map[string]any)
			targets, _, _ := unstructured.NestedStringSlice(m, "targets")
			if m["dnsName"] == host && len(targets) == 1 && targets[0] == target {
				return nil
			}
		}
	}
	return fmt.Errorf("no DNSEndpoint record %s → %s among %d objects", host, target, len(list.Items))
}

// parentAccepted: some parent reports the route Accepted for its current generation.
func parentAccepted(parents []gwv1.RouteParentStatus, gen int64) error {
	for _, p := range parents {
		if c := meta.FindStatusCondition(p.Conditions, string(gwv1.RouteConditionAccepted)); c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == gen {
			return nil
		}
	}
	return fmt.Errorf("parents %+v", parents)
}
