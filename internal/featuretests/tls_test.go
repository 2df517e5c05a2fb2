package featuretests

import (
	"context"
	"crypto/tls"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"testing"

	"github.com/fleetlb/fleetlb/internal/model"
)

// handshake opens a TLS connection to addr for serverName and returns the serial
// of the certificate the proxy chose and the negotiated protocol.
func handshake(t *testing.T, addr, serverName string, roots *ca) (*tls.Conn, *big.Int, string) {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{}, "tcp", addr, &tls.Config{
		ServerName: serverName, RootCAs: roots.Pool, NextProtos: []string{"h2", "http/1.1"},
	})
	if err != nil {
		t.Fatalf("TLS handshake for %s: %v", serverName, err)
	}
	st := conn.ConnectionState()
	return conn, st.PeerCertificates[0].SerialNumber, st.NegotiatedProtocol
}

// TestHTTPSBySNIWithTwoCertificatesAndRotation: each hostname gets its own
// certificate by SNI over SDS, HTTP/2 is negotiated by ALPN, a rotated certificate
// is served on the next handshake, and a connection open on the other hostname
// keeps working across the rotation.
func TestHTTPSBySNIWithTwoCertificatesAndRotation(t *testing.T) {
	a := startHTTPEcho(t, "a", "a-1", "a")
	b := startHTTPEcho(t, "b", "b-1", "b")
	roots := newCA(t)
	certA, serialA := roots.issue(t, "tenant-a/default/a-tls", "a.example.com", "*.a.example.com")
	certB, serialB := roots.issue(t, "tenant-b/default/b-tls", "b.example.com")

	vip := netip.MustParseAddr("127.0.31.2")
	fleet := func(certA model.Certificate) *model.Fleet {
		return &model.Fleet{
			Name:         fleetName,
			HTTP:         &model.SharedListener{VIP: vip, Port: 8080},
			HTTPS:        &model.SharedListener{VIP: vip, Port: 8443},
			Certificates: []model.Certificate{certA, certB},
			Backends:     []model.Backend{httpBackend("a", model.BackendHTTP1, a), httpBackend("b", model.BackendHTTP1, b)},
			VirtualHosts: []model.VirtualHost{
				{Name: "a", Hostnames: []string{"a.example.com", "*.a.example.com"}, Certificate: certA.Name, RedirectToHTTPS: true,
					Routes: []model.Route{{Name: "all", Match: prefix("/"), Forward: fwd("a")}}},
				{Name: "b", Hostnames: []string{"b.example.com"}, Certificate: certB.Name,
					Routes: []model.Route{{Name: "all", Match: prefix("/"), Forward: fwd("b")}}},
			},
		}
	}
	e := newEnv(t, false)
	e.apply(fleet(certA))
	httpsAddr := netip.AddrPortFrom(vip, 8443).String()

	for _, tc := range []struct {
		sni    string
		serial *big.Int
	}{{"a.example.com", serialA}, {"www.a.example.com", serialA}, {"b.example.com", serialB}} {
		conn, sn, proto := handshake(t, httpsAddr, tc.sni, roots)
		conn.Close()
		if sn.Cmp(tc.serial) != 0 || proto != "h2" {
			t.Errorf("SNI %s: certificate serial %v (want %v), ALPN %q (want h2)", tc.sni, sn, tc.serial, proto)
		}
	}
	if _, err := tls.Dial("tcp", httpsAddr, &tls.Config{ServerName: "c.example.com", RootCAs: roots.Pool}); err == nil {
		t.Error("a server name without a filter chain must fail the handshake")
	}

	// Requests over HTTPS reach each tenant's backend over HTTP/2.
	cb := client(httpsAddr, &tls.Config{RootCAs: roots.Pool})
	rb := get(t, cb, "https://b.example.com:8443/x")
	if rb.reply.Node != "b-1" || rb.reply.Headers["X-Forwarded-Proto"][0] != "https" {
		t.Fatalf("https b: node %q headers %v", rb.reply.Node, rb.reply.Headers)
	}
	// Plain HTTP on a hostname with RedirectToHTTPS answers with a redirect
	// to the fleet's HTTPS port (named: it is not 443).
	if r := get(t, client(netip.AddrPortFrom(vip, 8080).String(), nil), "http://a.example.com:8080/p?q=1"); r.status != 301 ||
		r.header.Get("Location") != "https://a.example.com:8443/p?q=1" {
		t.Errorf("http→https: %d %q", r.status, r.header.Get("Location"))
	}

	// Hold an HTTP/2 connection to b open, then rotate a's certificate.
	held := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots.Pool}, ForceAttemptHTTP2: true,
		DialTLSContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&tls.Dialer{Config: &tls.Config{ServerName: "b.example.com", RootCAs: roots.Pool, NextProtos: []string{"h2"}}}).DialContext(ctx, network, httpsAddr)
		}}
	var dials int
	heldClient := &http.Client{Transport: held}
	countDials := func() {
		held.DialTLSContext = wrapDial(held.DialTLSContext, &dials)
	}
	countDials()
	if r := do(t, heldClient, mustRequest("https://b.example.com:8443/before")); r.reply.Node != "b-1" {
		t.Fatalf("held connection: %q", r.reply.Node)
	}

	certA2, serialA2 := roots.issue(t, "tenant-a/default/a-tls", "a.example.com", "*.a.example.com")
	e.wire.reset()
	e.apply(fleet(certA2))
	if sent, _ := e.wire.count("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"); sent == 0 {
		t.Error("a rotated certificate must be pushed over SDS")
	}
	if sent, _ := e.wire.count("type.googleapis.com/envoy.config.listener.v3.Listener"); sent != 0 {
		t.Errorf("a certificate rotation must not touch listeners; %d listeners were sent", sent)
	}
	conn, sn, _ := handshake(t, httpsAddr, "a.example.com", roots)
	conn.Close()
	if sn.Cmp(serialA2) != 0 {
		t.Errorf("after rotation a.example.com is served serial %v, want the new %v", sn, serialA2)
	}
	if r := do(t, heldClient, mustRequest("https://b.example.com:8443/after")); r.reply.Node != "b-1" || r.reply.Path != "/after" {
		t.Errorf("held connection after rotation: %q %q", r.reply.Node, r.reply.Path)
	}
	if dials != 1 {
		t.Errorf("the held connection to b was replaced: %d dials, want 1", dials)
	}
}

func wrapDial(d func(context.Context, string, string) (net.Conn, error), n *int) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		*n++
		return d(ctx, network, addr)
	}
}

func mustRequest(url string) *http.Request {
	r, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		panic(err)
	}
	return r
}
