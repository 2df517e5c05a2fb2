package featuretests

import (
	"crypto/tls"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/fleetlb/fleetlb/envoy/translate"
	"github.com/fleetlb/fleetlb/internal/model"
)

// TestGatewayListenersOnTheirOwnVIP: a Gateway's ports as fleetlb-proxy
// serves them. On HTTP, "*" takes every host no listener names, a listener's
// hostname without routes answers 404 (its hosts are its own), and a narrower
// route hostname wins; on HTTPS each listener has its certificate by SNI,
// the hostname-less one for every other name.
func TestGatewayListenersOnTheirOwnVIP(t *testing.T) {
	anyB := startHTTPEcho(t, "a", "any-1", "any")
	shop := startHTTPEcho(t, "a", "shop-1", "shop")
	roots := newCA(t)
	certA, serialA := roots.issue(t, "a/tenant-a/wild", "*.a.example.com")
	certAny, serialAny := roots.issue(t, "a/tenant-a/any", "other.example.org")

	vip := netip.MustParseAddr("127.0.33.1")
	ref := model.Ref{Tenant: "a", Namespace: "tenant-a", Name: "gateway.default.gw"}
	all := []model.Route{
		{Name: "a/any/1/0", Match: prefix("/broken"), Respond: &model.Respond{Status: 500}}, // a rule without a usable backend
		{Name: "a/any/0/0", Match: prefix("/"), Forward: fwd("any")},
	}
	f := &model.Fleet{
		Name:         fleetName,
		Certificates: []model.Certificate{certA, certAny},
		Backends:     []model.Backend{httpBackend("any", model.BackendHTTP1, anyB), httpBackend("shop", model.BackendHTTP1, shop)},
		Gateways: []model.Gateway{{Ref: ref, VIP: vip, Ports: []model.GatewayPort{
			{Port: 8080, Protocol: model.ListenerHTTP, VirtualHosts: []model.VirtualHost{
				{Name: "*", Hostnames: []string{"*"}, Routes: all},
				{Name: "*.a.example.com", Hostnames: []string{"*.a.example.com"}},
				{Name: "shop.a.example.com", Hostnames: []string{"shop.a.example.com"}, Routes: []model.Route{{Name: "a/shop/0/0", Match: prefix("/"), Forward: fwd("shop")}}},
			}},
			{Port: 8443, Protocol: model.ListenerHTTPS, Listeners: []model.GatewayTLSListener{
				{Name: "wild", Hostname: "*.a.example.com", Certificate: certA.Name, VirtualHosts: []model.VirtualHost{
					{Name: "*.a.example.com", Hostnames: []string{"*.a.example.com"}, Routes: []model.Route{{Name: "a/shop/0/0", Match: prefix("/"), Forward: fwd("shop")}}}}},
				{Name: "any", Certificate: certAny.Name, VirtualHosts: []model.VirtualHost{{Name: "*", Hostnames: []string{"*"}, Routes: all}}},
			}},
		}}},
	}
	e := newEnv(t, true)
	e.apply(f)
	if l := translate.GatewayListenerName(ref, 8080); l != "gateway/a/gateway.default.gw/8080" {
		t.Errorf("listener name %q", l)
	}

	c := client(netip.AddrPortFrom(vip, 8080).String(), nil)
	for _, tc := range []struct {
		url    string
		status int
		node   string
	}{
		{"http://anything.example.org:8080/", 200, "any-1"},
		{"http://10.1.2.3:8080/x", 200, "any-1"},
		{"http://shop.a.example.com:8080/", 200, "shop-1"},
		{"http://www.a.example.com:8080/", 404, ""},
		{"http://anything.example.org:8080/broken/x", 500, ""},
	} {
		r := get(t, c, tc.url)
		if r.status != tc.status || r.reply.Node != tc.node {
			t.Errorf("%s: status %d node %q, want %d %q", tc.url, r.status, r.reply.Node, tc.status, tc.node)
		}
	}

	https := netip.AddrPortFrom(vip, 8443).String()
	for _, tc := range []struct {
		sni    string
		serial string
	}{{"www.a.example.com", serialA.String()}, {"other.example.org", serialAny.String()}} {
		conn, sn, _ := handshake(t, https, tc.sni, roots)
		conn.Close()
		if sn.String() != tc.serial {
			t.Errorf("SNI %s: certificate serial %v, want %s", tc.sni, sn, tc.serial)
		}
	}
	if r := get(t, client(https, &tls.Config{RootCAs: roots.Pool}), "https://www.a.example.com:8443/"); r.reply.Node != "shop-1" {
		t.Errorf("https *.a.example.com: node %q", r.reply.Node)
	}
	if r := get(t, client(https, &tls.Config{RootCAs: roots.Pool}), "https://other.example.org:8443/"); r.reply.Node != "any-1" {
		t.Errorf("https catch-all: node %q", r.reply.Node)
	}
}

// TestGatewayTLSPassthrough: a Gateway's TLS port passes connections through
// by SNI, undecrypted: the client sees the backend's own certificate, a name
// no route has goes to the catch-all route, and a connection that is not
// TLS is closed.
func TestGatewayTLSPassthrough(t *testing.T) {
	roots := newCA(t)
	tlsBackend := func(node string, names ...string) *backend {
		t.Helper()
		cert, serial := roots.issue(t, node, names...)
		pair, err := tls.X509KeyPair([]byte(cert.CertPEM), []byte(cert.KeyPEM))
		if err != nil {
			t.Fatal(err)
		}
		ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { defer c.Close(); _, _ = c.Write([]byte(node + " " + serial.String() + "\n")) }()
			}
		}()
		return &backend{addr: netip.MustParseAddrPort(ln.Addr().String())}
	}
	secure := tlsBackend("secure-1", "secure.example.com")
	other := tlsBackend("other-1", "other.example.com")
	tcpBackend := func(name string, b *backend) model.Backend {
		return model.Backend{Name: name, Protocol: model.BackendTCP, Groups: []model.EndpointGroup{{Cluster: "a", Endpoints: []model.Endpoint{b.endpoint()}}}}
	}
	vip := netip.MustParseAddr("127.0.33.2")
	f := &model.Fleet{
		Name:     fleetName,
		Backends: []model.Backend{tcpBackend("secure", secure), tcpBackend("other", other)},
		Gateways: []model.Gateway{{Ref: model.Ref{Tenant: "a", Namespace: "tenant-a", Name: "gateway.default.tls"}, VIP: vip, Ports: []model.GatewayPort{
			{Port: 8443, Protocol: model.ListenerTLS, Passthrough: []model.PassthroughRoute{
				{Name: "a/secure/0", Hostnames: []string{"secure.example.com"}, Backend: "secure"},
				{Name: "a/other/0", Backend: "other"},
			}},
		}}},
	}
	e := newEnv(t, true)
	e.apply(f)
	addr := netip.AddrPortFrom(vip, 8443).String()
	read := func(sni string) string {
		t.Helper()
		c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: sni, RootCAs: roots.Pool})
		if err != nil {
			t.Fatalf("SNI %s: %v", sni, err)
		}
		defer c.Close()
		b := make([]byte, 256)
		n, _ := c.Read(b)
		return string(b[:n])
	}
	if got := read("secure.example.com"); len(got) < 8 || got[:8] != "secure-1" {
		t.Errorf("secure.example.com reached %q", got)
	}
	if got := read("other.example.com"); len(got) < 7 || got[:7] != "other-1" {
		t.Errorf("other.example.com (the catch-all) reached %q", got)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 16)); err == nil {
		t.Errorf("plaintext on the TLS port got %d bytes back", n)
	}
}
