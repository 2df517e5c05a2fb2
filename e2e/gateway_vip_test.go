package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/e2e/harness"
	"github.com/fleetlb/fleetlb/internal/echo"
)

// passthroughPort is the Gateway's TLS passthrough listener in TestGatewayOwnVIP.
const passthroughPort = 9443

// passThrough sends a TLS ClientHello for sni to addr and returns the first
// line the backend sends: a TCP echo behind a passthrough route answers with
// its identity, which shows the bytes went through undecrypted.
func passThrough(addr, sni string) (string, error) {
	hello, err := clientHello(sni)
	if err != nil {
		return "", err
	}
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write(hello); err != nil {
		return "", err
	}
	return bufio.NewReader(c).ReadString('\n')
}

// clientHello is the first flight of a TLS client for sni.
func clientHello(sni string) ([]byte, error) {
	cl, sv := net.Pipe()
	defer sv.Close()
	go func() {
		_ = tls.Client(cl, &tls.Config{ServerName: sni, InsecureSkipVerify: true}).Handshake()
		cl.Close()
	}()
	buf := make([]byte, 16<<10)
	_ = sv.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err := sv.Read(buf)
	return buf[:n], err
}

// gatewayAddress waits until the tenant's Gateway is Programmed with its
// own address and returns it.
func gatewayAddress(t *testing.T, tc *harness.Tenant, name string) netip.Addr {
	t.Helper()
	var addr netip.Addr
	eventually(t, "Gateway "+name+" Programmed with its own address", 60*time.Second, func() error {
		var gw gwv1.Gateway
		if err := tc.Env.Client.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: name}, &gw); err != nil {
			return err
		}
		c := meta.FindStatusCondition(gw.Status.Conditions, string(gwv1.GatewayConditionProgrammed))
		if c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != gw.Generation || len(gw.Status.Addresses) != 1 {
			return fmt.Errorf("addresses %+v Programmed %+v", gw.Status.Addresses, c)
		}
		a, err := netip.ParseAddr(gw.Status.Addresses[0].Value)
		addr = a
		return err
	})
	return addr
}

// TestGatewayOwnVIP: a Gateway gets its own VIP from the tenant's pool and is
// Programmed before any route; a route without hostnames serves every host
// on its HTTP listener and on its HTTPS listener (the listener's certificate
// by SNI), through the real binaries; the shared VIP and the other tenant's
// Ingress are untouched by it, and the Gateway's address goes with it.
func TestGatewayOwnVIP(t *testing.T) {
	h := newHarness(t)
	f := check(h.StartFleet("127.0.81.1-127.0.81.8"))(t)
	check(f.StartProxy(true))(t)
	a := check(f.AddTenantWith("a", v1.TenantSpec{AddressPool: "vips"}))(t)
	b := check(f.AddTenantWith("b", v1.TenantSpec{AddressPool: "vips", Hostnames: []v1.Hostname{"*.b.example.com"}}))(t)
	if err := gwv1.Install(a.Env.Scheme); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := a.AddNode("a-1", "127.0.7.1", "z1"); err != nil {
		t.Fatal(err)
	}
	if err := b.AddNode("b-1", "127.0.8.1", "z1"); err != nil {
		t.Fatal(err)
	}
	var shared string
	eventually(t, "the fleet's shared VIP", 60*time.Second, func() error {
		var pf v1.ProxyFleet
		if err := f.Mgmt.Client.Get(ctx, client.ObjectKey{Name: v1.DefaultFleetName}, &pf); err != nil {
			return err
		}
		if len(pf.Status.Addresses) != 1 {
			return fmt.Errorf("addresses %+v", pf.Status.Addresses)
		}
		shared = string(pf.Status.Addresses[0].IP)
		return nil
	})
	sharedHTTP := netip.AddrPortFrom(netip.MustParseAddr(shared), harness.HTTPPort).String()

	ca := newTestCA(t)
	cert, _ := ca.secret(t, "gw-tls", "*.a.example.com")
	gw := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "gw"}, Spec: gwv1.GatewaySpec{
		GatewayClassName: "fleetlb",
		Listeners: []gwv1.Listener{
			{Name: "http", Port: harness.HTTPPort, Protocol: gwv1.HTTPProtocolType},
			{Name: "https", Port: harness.HTTPSPort, Protocol: gwv1.HTTPSProtocolType, Hostname: ptr.To(gwv1.Hostname("*.a.example.com")),
				TLS: &gwv1.ListenerTLSConfig{CertificateRefs: []gwv1.SecretObjectReference{{Name: "gw-tls"}}}},
			{Name: "tls", Port: passthroughPort, Protocol: gwv1.TLSProtocolType, TLS: &gwv1.ListenerTLSConfig{Mode: ptr.To(gwv1.TLSModePassthrough)}},
		},
	}}
	for _, o := range []client.Object{clusterIPService("web"), cert, gw} {
		if err := a.Env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	// Addresses and Programmed come with the Gateway, routes or not.
	vip := gatewayAddress(t, a, "gw")
	if vip.String() == shared {
		t.Fatalf("the Gateway got the fleet's shared VIP %s", vip)
	}
	gwHTTP, gwHTTPS := netip.AddrPortFrom(vip, harness.HTTPPort).String(), netip.AddrPortFrom(vip, harness.HTTPSPort).String()
	if r, err := httpVia(gwHTTP, "http://anything.example.org/", nil); err != nil || r.status != 404 {
		t.Errorf("the Gateway's listener without routes: %+v %v, want 404", r, err)
	}

	hr := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "all"}, Spec: gwv1.HTTPRouteSpec{
		CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "gw"}}},
		Rules: []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{
			Name: "web", Port: ptr.To(gwv1.PortNumber(80))}}}}}},
	}}
	if err := a.Env.Client.Create(ctx, hr); err != nil {
		t.Fatal(err)
	}
	serveCompanion(t, a, "web", map[string]string{"a-1": "127.0.7.1"})
	// A TLSRoute to a TCP backend on a node port: the fleet passes the
	// connection through by SNI without decrypting it.
	secure := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "secure"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort,
		Selector: map[string]string{"app": "secure"}, Ports: []corev1.ServicePort{{Port: 443, Protocol: corev1.ProtocolTCP}}}}
	tr := &gwv1.TLSRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "secure"}, Spec: gwv1.TLSRouteSpec{
		CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "gw", SectionName: ptr.To(gwv1.SectionName("tls"))}}},
		Hostnames:       []gwv1.Hostname{"secure.example.com"},
		Rules: []gwv1.TLSRouteRule{{BackendRefs: []gwv1.BackendRef{{BackendObjectReference: gwv1.BackendObjectReference{
			Name: "secure", Port: ptr.To(gwv1.PortNumber(443))}}}}},
	}}
	for _, o := range []client.Object{secure, tr} {
		if err := a.Env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.ServeNodePorts("default", "secure", map[string]string{"a-1": "127.0.7.1"}); err != nil {
		t.Fatal(err)
	}
	for _, o := range []client.Object{clusterIPService("shop"), ingressOf("shop", "shop.b.example.com", "", map[string]string{"/": "shop"})} {
		if err := b.Env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	serveCompanion(t, b, "shop", map[string]string{"b-1": "127.0.8.1"})

	t.Run("a route without hostnames serves every host of the HTTP listener", func(t *testing.T) {
		reaches(t, gwHTTP, "http://anything.example.org/x", nil, "a", "default/web-fleetlb")
		// Even a name another tenant owns on the shared VIP: this is a's own address.
		reaches(t, gwHTTP, "http://shop.b.example.com/", nil, "a", "default/web-fleetlb")
	})
	t.Run("and every host of the HTTPS listener, with its certificate", func(t *testing.T) {
		r := reaches(t, gwHTTPS, "https://www.a.example.com/", &tls.Config{RootCAs: ca.Pool}, "a", "default/web-fleetlb")
		if p := r.reply.Headers["X-Forwarded-Proto"]; len(p) != 1 || p[0] != "https" {
			t.Errorf("X-Forwarded-Proto %v", p)
		}
	})
	t.Run("TLS passthrough by SNI to the TLSRoute's backend", func(t *testing.T) {
		to := netip.AddrPortFrom(vip, passthroughPort).String()
		eventually(t, "secure.example.com passed through to default/secure", 60*time.Second, func() error {
			line, err := passThrough(to, "secure.example.com")
			if err != nil {
				return err
			}
			if id, err := echo.ParseLine(line); err != nil || id.Service != "default/secure" || id.Cluster != "a" {
				return fmt.Errorf("reached %q (%v)", line, err)
			}
			return nil
		})
		if line, err := passThrough(to, "other.example.com"); err == nil {
			t.Errorf("a server name no TLSRoute has reached %q", line)
		}
	})
	t.Run("the shared VIP is untouched", func(t *testing.T) {
		reaches(t, sharedHTTP, "http://shop.b.example.com/", nil, "b", "default/shop-fleetlb")
		if r, err := httpVia(sharedHTTP, "http://anything.example.org/", nil); err != nil || r.status != 404 {
			t.Errorf("a hostname-less Gateway route answered on the shared VIP: %+v %v, want 404", r, err)
		}
	})
	t.Run("route parent status", func(t *testing.T) {
		eventually(t, "HTTPRoute parent status Accepted", 30*time.Second, func() error {
			var got gwv1.HTTPRoute
			if err := a.Env.Client.Get(ctx, client.ObjectKeyFromObject(hr), &got); err != nil {
				return err
			}
			return parentAccepted(got.Status.Parents, got.Generation)
		})
	})
	t.Run("the address goes with the Gateway", func(t *testing.T) {
		for _, o := range []client.Object{hr, tr, gw} {
			if err := a.Env.Client.Delete(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, "the Gateway's LoadBalancer released", 60*time.Second, func() error {
			var lbs v1.LoadBalancerList
			if err := f.Mgmt.Client.List(ctx, &lbs, client.InNamespace("tenant-a")); err != nil {
				return err
			}
			for _, lb := range lbs.Items {
				if lb.Spec.Source.Kind == v1.SourceGateway {
					return fmt.Errorf("LoadBalancer %s still there", lb.Name)
				}
			}
			return nil
		})
		eventually(t, "nothing listens on the Gateway's VIP", 60*time.Second, func() error {
			if _, err := httpVia(gwHTTP, "http://anything.example.org/", nil); err == nil {
				return fmt.Errorf("still answered")
			}
			return nil
		})
	})
}
