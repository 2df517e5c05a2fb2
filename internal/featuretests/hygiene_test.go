package featuretests

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/fleetlb/fleetlb/envoy/translate"
	"github.com/fleetlb/fleetlb/internal/echo"
	"github.com/fleetlb/fleetlb/internal/model"
)

// The tests of this file shorten the translator's timeouts and limits in the
// xDS resources themselves, so they run in milliseconds; nothing asserts how
// fast anything happened, only what happened.

// translated is the translator's output for f with the HTTP connection
// managers and clusters changed by the given functions.
func translated(t *testing.T, f *model.Fleet, hcm func(*hcmv3.HttpConnectionManager), cluster func(*clusterv3.Cluster)) *translate.Output {
	t.Helper()
	out, err := translate.Translate(f)
	if err != nil {
		t.Fatal(err)
	}
	if hcm != nil {
		for _, r := range out.Listeners {
			for _, fc := range r.(*listenerv3.Listener).GetFilterChains() {
				for _, flt := range fc.GetFilters() {
					m := &hcmv3.HttpConnectionManager{}
					if flt.GetTypedConfig().UnmarshalTo(m) != nil {
						continue
					}
					hcm(m)
					a, err := anypb.New(m)
					if err != nil {
						t.Fatal(err)
					}
					flt.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
				}
			}
		}
	}
	if cluster != nil {
		for _, r := range out.Clusters {
			cluster(r.(*clusterv3.Cluster))
		}
	}
	return out
}

// httpFleet serves app.example.com on vip:8080 from backend b.
func httpFleet(vip netip.Addr, b *backend) *model.Fleet {
	return &model.Fleet{
		Name:     fleetName,
		HTTP:     &model.SharedListener{VIP: vip, Port: 8080},
		Backends: []model.Backend{httpBackend("app", model.BackendHTTP1, b)},
		VirtualHosts: []model.VirtualHost{{Name: "app", Hostnames: []string{"app.example.com"},
			Routes: []model.Route{{Name: "all", Match: prefix("/"), Forward: &model.Forward{
				Backends: []model.WeightedBackend{{Backend: "app", Weight: 1}}, Timeout: model.Duration(time.Minute)}}}}},
	}
}

// startBackend serves h on loopback (a backend whose behaviour the test controls).
func startBackend(t *testing.T, h http.Handler) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return &backend{addr: netip.MustParseAddrPort(ln.Addr().String())}
}

// dialRaw opens a TCP connection to addr whose reads give up after 10 s, far
// beyond every timeout the tests configure and far below the ones they do not.
func dialRaw(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	return c
}

// closedByPeer reads c to its end and fails unless the peer closed it (rather
// than the test's own read deadline ending the wait).
func closedByPeer(t *testing.T, c net.Conn, what string) {
	t.Helper()
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: the proxy kept the connection open", what)
	}
}

// TestRequestHeadersTimeoutCutsOffSlowHeaders: a client that sends its headers
// a line at a time, each in good time but all of them not, is disconnected
// after request_headers_timeout; one that sends them at once is served.
func TestRequestHeadersTimeoutCutsOffSlowHeaders(t *testing.T) {
	vip := netip.MustParseAddr("127.0.32.1")
	app := startHTTPEcho(t, "a", "app-1", "app")
	e := newEnv(t, true)
	e.applyResources(translated(t, httpFleet(vip, app), func(m *hcmv3.HttpConnectionManager) {
		m.RequestHeadersTimeout = durationpb.New(300 * time.Millisecond)
	}, nil))
	to := netip.AddrPortFrom(vip, 8080).String()

	if r := get(t, client(to, nil), "http://app.example.com/"); r.status != http.StatusOK || r.reply.Node != "app-1" {
		t.Fatalf("headers sent at once: %d %q", r.status, r.reply.Node)
	}

	c := dialRaw(t, to)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		// 100 lines 50 ms apart: the whole would take 5 s.
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: app.example.com\r\n"); err != nil {
			return
		}
		for i := range 100 {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := fmt.Fprintf(c, "X-Slow-%d: 1\r\n", i); err != nil {
				return
			}
		}
	}()
	closedByPeer(t, c, "slow headers")
}

// TestIdleKeepAliveConnectionIsClosed: after a response, a keep-alive
// connection with no further request is closed after idle_timeout.
func TestIdleKeepAliveConnectionIsClosed(t *testing.T) {
	vip := netip.MustParseAddr("127.0.32.2")
	app := startHTTPEcho(t, "a", "app-1", "app")
	e := newEnv(t, true)
	e.applyResources(translated(t, httpFleet(vip, app), func(m *hcmv3.HttpConnectionManager) {
		m.CommonHttpProtocolOptions.IdleTimeout = durationpb.New(300 * time.Millisecond)
	}, nil))

	c := dialRaw(t, netip.AddrPortFrom(vip, 8080).String())
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("first request: %d, close=%v; want 200 on a kept-alive connection", resp.StatusCode, resp.Close)
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("the idle keep-alive connection was not closed")
		}
	}
}

// TestStreamIdleTimeout: a request whose body stalls ends with 408 (and the
// connection closes); a complete request whose backend stalls ends with 504,
// as Envoy answers once the whole request had arrived.
func TestStreamIdleTimeout(t *testing.T) {
	vip := netip.MustParseAddr("127.0.32.3")
	stall := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/stall" {
			<-r.Context().Done() // until the proxy gives up
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	e := newEnv(t, true)
	e.applyResources(translated(t, httpFleet(vip, stall), func(m *hcmv3.HttpConnectionManager) {
		m.StreamIdleTimeout = durationpb.New(300 * time.Millisecond)
	}, nil))
	to := netip.AddrPortFrom(vip, 8080).String()

	c := dialRaw(t, to)
	if _, err := io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 10\r\n\r\nabc"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("stalled body: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("stalled body: %d, want 408", resp.StatusCode)
	}
	closedByPeer(t, c, "after a 408 with a half-read body")

	if r := get(t, client(to, nil), "http://app.example.com/stall"); r.status != http.StatusGatewayTimeout {
		t.Errorf("stalled backend: %d, want 504", r.status)
	}
	if r := get(t, client(to, nil), "http://app.example.com/ok"); r.status != http.StatusOK {
		t.Errorf("a request that does not stall: %d", r.status)
	}
}

// TestOversizedHeadersGet431: the translator's limits (60 KiB, 100 headers)
// as Envoy counts them.
func TestOversizedHeadersGet431(t *testing.T) {
	vip := netip.MustParseAddr("127.0.32.4")
	app := startHTTPEcho(t, "a", "app-1", "app")
	e := newEnv(t, true)
	e.apply(httpFleet(vip, app))
	c := client(netip.AddrPortFrom(vip, 8080).String(), nil)

	if r := get(t, c, "http://app.example.com/", "X-Big", strings.Repeat("a", 50<<10)); r.status != http.StatusOK {
		t.Errorf("50 KiB of headers: %d, want 200", r.status)
	}
	if r := get(t, c, "http://app.example.com/", "X-Big", strings.Repeat("a", 61<<10)); r.status != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("61 KiB of headers: %d, want 431", r.status)
	}
	var many []string
	for i := range 100 {
		many = append(many, fmt.Sprintf("X-H-%d", i), "1")
	}
	if r := get(t, c, "http://app.example.com/", many...); r.status != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("101 headers with Host: %d, want 431", r.status)
	}
	if r := get(t, c, "http://app.example.com/", many[:180]...); r.status != http.StatusOK {
		t.Errorf("90 headers: %d, want 200", r.status)
	}
}

// TestClusterCircuitBreakerOverflow: with max_connections 1 and
// max_pending_requests 1, a request waits for the one busy connection and the
// next overflows at once with 503 and x-envoy-overloaded; the waiting one is
// served when the connection frees.
func TestClusterCircuitBreakerOverflow(t *testing.T) {
	vip := netip.MustParseAddr("127.0.32.5")
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	b := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			arrived <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		w.WriteHeader(http.StatusOK)
	}))
	e := newEnv(t, true)
	e.applyResources(translated(t, httpFleet(vip, b), nil, func(c *clusterv3.Cluster) {
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			MaxConnections: wrapperspb.UInt32(1), MaxPendingRequests: wrapperspb.UInt32(1),
		}}}
	}))
	to := netip.AddrPortFrom(vip, 8080).String()
	// Each request on its own downstream connection, so only the upstream limits matter.
	do := func(path string) result {
		c := client(to, nil)
		c.Transport.(*http.Transport).DisableKeepAlives = true
		return get(t, c, "http://app.example.com"+path)
	}
	if r := do("/warm"); r.status != http.StatusOK {
		t.Fatalf("first request: %d", r.status)
	}

	blocked := make(chan result, 1)
	go func() { blocked <- do("/block") }()
	<-arrived // the one upstream connection is busy now
	results := make(chan result, 2)
	for range 2 {
		go func() { results <- do("/") }()
	}
	first := <-results
	if first.status != http.StatusServiceUnavailable || first.header.Get("X-Envoy-Overloaded") != "true" {
		t.Fatalf("with the connection busy and one request pending: %d %v, want 503 with x-envoy-overloaded", first.status, first.header)
	}
	close(release)
	if r := <-blocked; r.status != http.StatusOK {
		t.Errorf("the blocked request: %d", r.status)
	}
	if r := <-results; r.status != http.StatusOK {
		t.Errorf("the pending request, once the connection freed: %d, want 200", r.status)
	}
}

// tcpFleet serves an echo backend on vip:9000 through tcp_proxy.
func tcpFleet(t *testing.T, vip netip.Addr, idle time.Duration) *model.Fleet {
	t.Helper()
	s := echo.New(echo.Identity{Cluster: "a", Node: "db-1", Service: "db"})
	a, err := s.ServeTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ap := netip.MustParseAddrPort(a.String())
	return &model.Fleet{
		Name: fleetName,
		L4: []model.L4Service{{Ref: model.Ref{Tenant: "a", Namespace: "ns", Name: "db"}, VIP: vip, Port: 9000, Protocol: model.TCP,
			Backend: "db", IdleTimeout: model.Duration(idle)}},
		Backends: []model.Backend{{Name: "db", Protocol: model.BackendTCP,
			Groups: []model.EndpointGroup{{Cluster: "a", Endpoints: []model.Endpoint{{Address: ap.Addr(), Port: ap.Port()}}}}}},
	}
}

// TestTCPProxyIdleTimeout: an idle proxied TCP connection is closed after the
// tcp_proxy's idle_timeout.
func TestTCPProxyIdleTimeout(t *testing.T) {
	vip := netip.MustParseAddr("127.0.32.6")
	e := newEnv(t, true)
	e.apply(tcpFleet(t, vip, 300*time.Millisecond))
	c := dialRaw(t, netip.AddrPortFrom(vip, 9000).String())
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.Contains(line, "node=db-1") {
		t.Fatalf("echo greeting through the proxy: %q %v", line, err)
	}
	closedByPeer(t, c, "idle TCP connection")
}

// TestTCPProxyMaxConnectionsOverflow: past the cluster's max_connections a new
// TCP connection is closed at once; when one ends, the next is served.
func TestTCPProxyMaxConnectionsOverflow(t *testing.T) {
	vip := netip.MustParseAddr("127.0.32.7")
	e := newEnv(t, true)
	e.applyResources(translated(t, tcpFleet(t, vip, 0), nil, func(c *clusterv3.Cluster) {
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxConnections: wrapperspb.UInt32(1)}}}
	}))
	to := netip.AddrPortFrom(vip, 9000).String()
	greeting := func(c net.Conn) string {
		line, _ := bufio.NewReader(c).ReadString('\n')
		return line
	}
	first := dialRaw(t, to)
	if g := greeting(first); !strings.Contains(g, "node=db-1") {
		t.Fatalf("first connection: %q", g)
	}
	second := dialRaw(t, to)
	if g := greeting(second); g != "" {
		t.Fatalf("second connection past max_connections got %q, want it closed", g)
	}
	closedByPeer(t, second, "connection past max_connections")
	first.Close()
	eventually(t, "a connection after the first ended", func() error {
		c, err := net.DialTimeout("tcp", to, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if g := greeting(c); !strings.Contains(g, "node=db-1") {
			return fmt.Errorf("greeting %q", g)
		}
		return nil
	})
}

// TestUnsupportedLimitIsNACKed: limits the proxy cannot honour are NACKed with
// the field named, and the last good configuration keeps serving.
func TestUnsupportedLimitIsNACKed(t *testing.T) {
	vip := netip.MustParseAddr("127.0.32.8")
	app := startHTTPEcho(t, "a", "app-1", "app")
	e := newEnv(t, true)
	e.apply(httpFleet(vip, app))
	c := client(netip.AddrPortFrom(vip, 8080).String(), nil)

	for _, tc := range []struct {
		name string
		out  *translate.Output
		want string
	}{
		{"max_connection_duration", translated(t, httpFleet(vip, app), func(m *hcmv3.HttpConnectionManager) {
			m.CommonHttpProtocolOptions.MaxConnectionDuration = durationpb.New(time.Minute)
		}, nil), "common_http_protocol_options: field max_connection_duration is not supported"},
		{"HIGH priority threshold", translated(t, httpFleet(vip, app), nil, func(c *clusterv3.Cluster) {
			c.CircuitBreakers.Thresholds[0].Priority = corev3.RoutingPriority_HIGH
		}), "priority HIGH is not supported"},
		{"small buffer limit", translated(t, httpFleet(vip, app), nil, func(c *clusterv3.Cluster) {
			c.PerConnectionBufferLimitBytes = wrapperspb.UInt32(1024)
		}), "per_connection_buffer_limit_bytes 1024 is below"},
		{"stream window below HTTP/2's minimum", translated(t, httpFleet(vip, app), func(m *hcmv3.HttpConnectionManager) {
			m.Http2ProtocolOptions.InitialStreamWindowSize = wrapperspb.UInt32(1000)
		}, nil), "initial_stream_window_size 1000 is out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.xds.Set(fleetName, tc.out.ByType())
			eventually(t, "the NACK", func() error {
				if n := e.proxy.LastNACK(); n != nil && strings.Contains(n.Detail, tc.want) {
					return nil
				}
				return fmt.Errorf("last NACK %+v, want one naming %q", e.proxy.LastNACK(), tc.want)
			})
			if r := get(t, c, "http://app.example.com/"); r.status != http.StatusOK {
				t.Errorf("after the NACK the last good configuration must serve: %d", r.status)
			}
		})
	}
}

// TestRequestTimeout: with request_timeout set, a client that keeps sending
// its body, but too slowly to finish in time, gets 408 although the stream is
// never idle.
func TestRequestTimeout(t *testing.T) {
	vip := netip.MustParseAddr("127.0.32.9")
	sink := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
	}))
	e := newEnv(t, true)
	e.applyResources(translated(t, httpFleet(vip, sink), func(m *hcmv3.HttpConnectionManager) {
		m.RequestTimeout = durationpb.New(300 * time.Millisecond)
	}, nil))
	c := dialRaw(t, netip.AddrPortFrom(vip, 8080).String())
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		// 100 bytes 50 ms apart: the whole would take 5 s.
		if _, err := io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 100\r\n\r\n"); err != nil {
			return
		}
		for range 100 {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := io.WriteString(c, "x"); err != nil {
				return
			}
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("slow body: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("slow body past request_timeout: %d, want 408", resp.StatusCode)
	}
}

// TestHTTP2LimitsReachTheWire: the translator's HTTP/2 limits are what the
// proxy announces in its SETTINGS, and a request over max_headers_count on
// HTTP/2 is reset rather than answered.
func TestHTTP2LimitsReachTheWire(t *testing.T) {
	vip := netip.MustParseAddr("127.0.32.10")
	app := startHTTPEcho(t, "a", "app-1", "app")
	e := newEnv(t, true)
	e.apply(httpFleet(vip, app))
	to := netip.AddrPortFrom(vip, 8080).String()

	c := dialRaw(t, to)
	// Client preface and an empty SETTINGS frame (h2c with prior knowledge).
	if _, err := io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"); err != nil {
		t.Fatal(err)
	}
	settings := map[uint16]uint32{}
	var connWindowIncrement uint32
	br := bufio.NewReader(c)
	for range 10 { // SETTINGS, WINDOW_UPDATE and the ACK of ours come first
		var h [9]byte
		if _, err := io.ReadFull(br, h[:]); err != nil {
			t.Fatalf("reading frames: %v", err)
		}
		n, typ, flags := int(h[0])<<16|int(h[1])<<8|int(h[2]), h[3], h[4]
		p := make([]byte, n)
		if _, err := io.ReadFull(br, p); err != nil {
			t.Fatal(err)
		}
		switch {
		case typ == 0x4 && flags&0x1 == 0: // SETTINGS
			for i := 0; i+6 <= n; i += 6 {
				settings[uint16(p[i])<<8|uint16(p[i+1])] = uint32(p[i+2])<<24 | uint32(p[i+3])<<16 | uint32(p[i+4])<<8 | uint32(p[i+5])
			}
		case typ == 0x8 && h[5]|h[6]|h[7]|h[8] == 0: // WINDOW_UPDATE on the connection
			connWindowIncrement = uint32(p[0]&0x7f)<<24 | uint32(p[1])<<16 | uint32(p[2])<<8 | uint32(p[3])
		}
		if len(settings) > 0 && connWindowIncrement > 0 {
			break
		}
	}
	if settings[0x3] != 100 || settings[0x4] != 64<<10 {
		t.Errorf("SETTINGS %v: want MAX_CONCURRENT_STREAMS (3) 100 and INITIAL_WINDOW_SIZE (4) 65536", settings)
	}
	if got := 65535 + connWindowIncrement; got != 1<<20 {
		t.Errorf("connection window %d, want 1 MiB", got)
	}

	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	hc := client(to, nil)
	hc.Transport.(*http.Transport).Protocols = &p
	req, _ := http.NewRequest(http.MethodGet, "http://app.example.com/", nil)
	for i := range 100 {
		req.Header.Set(fmt.Sprintf("X-H-%d", i), "1")
	}
	if resp, err := hc.Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("101 headers over HTTP/2: answered %d, want the stream reset", resp.StatusCode)
	}
	if r := get(t, hc, "http://app.example.com/"); r.status != http.StatusOK {
		t.Errorf("after the reset, a normal HTTP/2 request: %d", r.status)
	}
}

// TestStreamIdleTimeoutResetsAStalledReader: a client that stops reading a
// response mid-body is reset after stream_idle_timeout, so it holds neither a
// proxy connection nor the backend's request.
func TestStreamIdleTimeoutResetsAStalledReader(t *testing.T) {
	vip := netip.MustParseAddr("127.0.32.11")
	backendDone := make(chan struct{})
	big := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(backendDone)
		chunk := make([]byte, 64<<10)
		for range 1024 { // 64 MiB, far more than the sockets between buffer
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	e := newEnv(t, true)
	e.applyResources(translated(t, httpFleet(vip, big), func(m *hcmv3.HttpConnectionManager) {
		m.StreamIdleTimeout = durationpb.New(300 * time.Millisecond)
	}, nil))
	c := dialRaw(t, netip.AddrPortFrom(vip, 8080).String())
	if _, err := io.WriteString(c, "GET /big HTTP/1.1\r\nHost: app.example.com\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1024)); err != nil {
		t.Fatal(err)
	}
	// The client reads no further.
	select {
	case <-backendDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the backend's request was never ended")
	}
	eventually(t, "the stalled client's connection is closed", func() error {
		if n := e.proxy.ActiveConnections()[translate.HTTPListenerName]; n != 0 {
			return fmt.Errorf("%d open connections on the http listener", n)
		}
		return nil
	})
}
