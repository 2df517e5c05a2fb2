package featuretests

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetlb/fleetlb/internal/blackhole"
	"github.com/fleetlb/fleetlb/internal/echo"
	"github.com/fleetlb/fleetlb/internal/model"
)

// Failover in the data plane (issue 14): retries of the virtual hosts' retry
// policy and outlier detection's ejection on local-origin failures, through
// the real translator and fleetlb-proxy, with loopback backends.

// refusingEndpoint is a loopback address:port where nothing listens.
func refusingEndpoint(t *testing.T) model.Endpoint {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close()
	return model.Endpoint{Address: ap.Addr(), Port: ap.Port()}
}

// statusBackend answers every request with status and counts them by method.
type statusBackend struct {
	ep    model.Endpoint
	mu    sync.Mutex
	calls map[string]int
}

func startStatusBackend(t *testing.T, status int) *statusBackend {
	t.Helper()
	b := &statusBackend{calls: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.calls[r.Method]++
		b.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	ap := netip.MustParseAddrPort(strings.TrimPrefix(srv.URL, "http://"))
	b.ep = model.Endpoint{Address: ap.Addr(), Port: ap.Port()}
	return b
}

func (b *statusBackend) count(method string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls[method]
}

// failoverFleet is one HTTP virtual host over a backend with a priority-0
// group (cluster east) and a priority-1 group (cluster west), without active
// health checks, so only retries and outlier detection act.
func failoverFleet(vip netip.Addr, primary, standby []model.Endpoint, outlier *model.Outlier) *model.Fleet {
	return &model.Fleet{
		Name: fleetName,
		HTTP: &model.SharedListener{VIP: vip, Port: 8080},
		Backends: []model.Backend{{
			Name: "web", Protocol: model.BackendHTTP1, Outlier: outlier,
			Groups: []model.EndpointGroup{
				{Cluster: "east", Priority: 0, Endpoints: primary},
				{Cluster: "west", Priority: 1, Endpoints: standby},
			},
		}},
		VirtualHosts: []model.VirtualHost{{Name: "web", Hostnames: []string{"web.example.com"},
			Routes: []model.Route{{Name: "all", Match: prefix("/"), Forward: fwd("web")}}}},
	}
}

// TestGETSurvivesRefusingPriorityZero: the priority-0 node refuses
// connections; every GET is answered by priority 1 (the first by a retry,
// the rest because one refused connect ejected the node).
func TestGETSurvivesRefusingPriorityZero(t *testing.T) {
	standby := startHTTPEcho(t, "west", "west-1", "web")
	vip := netip.MustParseAddr("127.0.31.40")
	e := newEnv(t, true)
	e.apply(failoverFleet(vip, []model.Endpoint{refusingEndpoint(t)}, []model.Endpoint{standby.endpoint()}, nil))
	c := client(netip.AddrPortFrom(vip, 8080).String(), nil)
	for i := range 20 {
		if r := get(t, c, "http://web.example.com/"); r.status != http.StatusOK || r.reply.Cluster != "west" {
			t.Fatalf("GET %d: status %d from %q, want 200 from west", i, r.status, r.reply.Cluster)
		}
	}
}

// TestGET503IsRetriedToPriorityOne: a 503 from priority 0 is retried; with
// previous_priorities (update_frequency 2) the third attempt leaves priority
// 0, so the client sees priority 1's answer.
func TestGET503IsRetriedToPriorityOne(t *testing.T) {
	primary := startStatusBackend(t, http.StatusServiceUnavailable)
	standby := startHTTPEcho(t, "west", "west-1", "web")
	vip := netip.MustParseAddr("127.0.31.41")
	e := newEnv(t, true)
	// consecutive_5xx high: the 503s must not eject priority 0, so every
	// GET goes there first and must be retried.
	e.apply(failoverFleet(vip, []model.Endpoint{primary.ep}, []model.Endpoint{standby.endpoint()}, &model.Outlier{Consecutive5xx: 1000}))
	c := client(netip.AddrPortFrom(vip, 8080).String(), nil)
	for i := range 5 {
		if r := get(t, c, "http://web.example.com/"); r.status != http.StatusOK || r.reply.Cluster != "west" {
			t.Fatalf("GET %d: status %d from %q, want 200 from west", i, r.status, r.reply.Cluster)
		}
	}
	if n := primary.count(http.MethodGet); n < 5 {
		t.Fatalf("priority 0 saw %d GETs, want every GET to try it first (at least 5)", n)
	}
}

// TestPOST503IsNotRetried: a POST is not idempotent: its 503 reaches the
// client and priority 0 saw it exactly once.
func TestPOST503IsNotRetried(t *testing.T) {
	primary := startStatusBackend(t, http.StatusServiceUnavailable)
	standby := startHTTPEcho(t, "west", "west-1", "web")
	vip := netip.MustParseAddr("127.0.31.42")
	e := newEnv(t, true)
	e.apply(failoverFleet(vip, []model.Endpoint{primary.ep}, []model.Endpoint{standby.endpoint()}, &model.Outlier{Consecutive5xx: 1000}))
	c := client(netip.AddrPortFrom(vip, 8080).String(), nil)
	for i := range 3 {
		req, _ := http.NewRequest(http.MethodPost, "http://web.example.com/", strings.NewReader("order=1"))
		if r := do(t, c, req); r.status != http.StatusServiceUnavailable {
			t.Fatalf("POST %d: status %d, want priority 0's 503 unretried", i, r.status)
		}
		if n := primary.count(http.MethodPost); n != i+1 {
			t.Fatalf("after %d POSTs priority 0 saw %d: a POST was retried", i+1, n)
		}
	}
	// A PUT with a body is idempotent: retried, body and all.
	req, _ := http.NewRequest(http.MethodPut, "http://web.example.com/", strings.NewReader("state=on"))
	if r := do(t, c, req); r.status != http.StatusOK || r.reply.Cluster != "west" {
		t.Fatalf("PUT: status %d from %q, want 200 from west", r.status, r.reply.Cluster)
	}
}

// TestRetryBudgetCapsConcurrentRetries: ten GETs at once all get a 503 from
// priority 0 and want to retry; priority 1 holds whatever reaches it. The
// clusters' retry budget (20% of requests in flight, at least 3) lets at most
// three retries run at once: the others return the 503.
func TestRetryBudgetCapsConcurrentRetries(t *testing.T) {
	primary := startStatusBackend(t, http.StatusServiceUnavailable)
	release := make(chan struct{})
	var held atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		held.Add(1)
		<-release
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	ap := netip.MustParseAddrPort(strings.TrimPrefix(srv.URL, "http://"))
	vip := netip.MustParseAddr("127.0.31.43")
	e := newEnv(t, true)
	e.apply(failoverFleet(vip, []model.Endpoint{primary.ep}, []model.Endpoint{{Address: ap.Addr(), Port: ap.Port()}}, &model.Outlier{Consecutive5xx: 1000}))
	c := client(netip.AddrPortFrom(vip, 8080).String(), nil)

	const n = 10
	statuses := make(chan int, n)
	for range n {
		go func() {
			resp, err := c.Get("http://web.example.com/")
			if err != nil {
				statuses <- 0
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	// Wait (bounded) until every request either returned or is held by
	// priority 1.
	var got []int
	eventually(t, "every request returned or held by priority 1", func() error {
		for {
			select {
			case s := <-statuses:
				got = append(got, s)
				continue
			default:
			}
			break
		}
		if len(got)+int(held.Load()) != n {
			return fmt.Errorf("%d returned, %d held", len(got), held.Load())
		}
		return nil
	})
	if h := held.Load(); h > 3 || h < 1 {
		t.Fatalf("%d retries reached priority 1 at once, want 1 to 3 (the budget's minimum concurrency)", h)
	}
	for _, s := range got {
		if s != http.StatusServiceUnavailable {
			t.Fatalf("a request refused a retry by the budget returned %d, want priority 0's 503", s)
		}
	}
	close(release)
	released = true
	for range int(held.Load()) {
		if s := <-statuses; s != http.StatusOK {
			t.Fatalf("a retried request returned %d after priority 1 answered, want 200", s)
		}
	}
}

// TestOneRefusedConnectEjects: two nodes of one priority, one refusing. POSTs
// are never retried, so a POST sent to the refusing node fails: with one
// local-origin failure ejecting the node, at most the first of twenty does
// (round robin without ejection would fail every other one).
func TestOneRefusedConnectEjects(t *testing.T) {
	good := startHTTPEcho(t, "east", "east-1", "web")
	standby := startHTTPEcho(t, "west", "west-1", "web")
	vip := netip.MustParseAddr("127.0.31.44")
	e := newEnv(t, true)
	// A long ejection keeps the test free of timing.
	e.apply(failoverFleet(vip, []model.Endpoint{refusingEndpoint(t), good.endpoint()}, []model.Endpoint{standby.endpoint()},
		&model.Outlier{BaseEjectionTime: model.Duration(time.Hour)}))
	c := client(netip.AddrPortFrom(vip, 8080).String(), nil)
	failed := 0
	for range 20 {
		req, _ := http.NewRequest(http.MethodPost, "http://web.example.com/", strings.NewReader("x"))
		if r := do(t, c, req); r.status != http.StatusOK {
			failed++
		}
	}
	if failed > 1 {
		t.Fatalf("%d of 20 POSTs failed: the refusing node was not ejected after its first failed connect", failed)
	}
}

// TestHealthCheckFieldsAccepted: the health check and outlier detection the
// translator emits by default (edge and no-traffic intervals, jitter, split
// local-origin errors) are accepted by the proxy, and when priority 0 dies
// every GET lands on priority 1: retries until the checks take it out.
func TestHealthCheckFieldsAccepted(t *testing.T) {
	primary := startHTTPEcho(t, "east", "east-1", "web")
	standby := startHTTPEcho(t, "west", "west-1", "web")
	vip := netip.MustParseAddr("127.0.31.45")
	f := failoverFleet(vip, []model.Endpoint{primary.endpoint()}, []model.Endpoint{standby.endpoint()}, nil)
	f.Backends[0].HealthCheck = &model.HealthCheck{Type: model.HealthHTTP, Path: "/healthz"}
	e := newEnv(t, true)
	e.apply(f)
	c := client(netip.AddrPortFrom(vip, 8080).String(), nil)
	eventually(t, "priority 0 serves", func() error {
		if r := get(t, c, "http://web.example.com/"); r.reply.Cluster != "east" {
			return fmt.Errorf("served by %q (status %d)", r.reply.Cluster, r.status)
		}
		return nil
	})
	primary.srv.Close()
	// From here every GET must succeed: retries cover the time until the
	// health check (1 s interval, threshold 2) takes priority 0 out.
	for i := range 10 {
		if r := get(t, c, "http://web.example.com/"); r.status != http.StatusOK || r.reply.Cluster != "west" {
			t.Fatalf("GET %d after priority 0 died: status %d from %q", i, r.status, r.reply.Cluster)
		}
	}
}

// TestUpgradeThroughRetryingRouter: a GET with Upgrade goes through the
// retrying router and the upgraded connection carries bytes both ways.
func TestUpgradeThroughRetryingRouter(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		_ = rw.Flush()
		line, err := rw.ReadString('\n')
		if err != nil {
			return
		}
		_, _ = rw.WriteString("echo " + line)
		_ = rw.Flush()
	}))
	defer srv.Close()
	ap := netip.MustParseAddrPort(strings.TrimPrefix(srv.URL, "http://"))
	vip := netip.MustParseAddr("127.0.31.46")
	e := newEnv(t, true)
	e.apply(failoverFleet(vip, []model.Endpoint{{Address: ap.Addr(), Port: ap.Port()}}, []model.Endpoint{refusingEndpoint(t)}, nil))
	conn, err := net.DialTimeout("tcp", netip.AddrPortFrom(vip, 8080).String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("GET / HTTP/1.1\r\nHost: web.example.com\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade answered %d, want 101", resp.StatusCode)
	}
	if _, err := conn.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := br.ReadString('\n'); err != nil || line != "echo ping\n" {
		t.Fatalf("over the upgraded connection: %q, %v", line, err)
	}
}

// TestTCPConnectionsSurviveRefusingPriorityZero: L4 failover. Both
// priority-0 nodes refuse connections; tcp_proxy's max_connect_attempts with
// the ejection of each refusing node on its first failure takes every client
// connection to priority 1.
func TestTCPConnectionsSurviveRefusingPriorityZero(t *testing.T) {
	db := echo.New(echo.Identity{Cluster: "west", Node: "west-1", Service: "db"})
	defer db.Close()
	a, err := db.ServeTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	standby := netip.MustParseAddrPort(a.String())
	vip := netip.MustParseAddr("127.0.31.47")
	e := newEnv(t, true)
	e.apply(&model.Fleet{
		Name: fleetName,
		L4:   []model.L4Service{{Ref: model.Ref{Tenant: "a", Namespace: "ns", Name: "db"}, VIP: vip, Port: 5432, Protocol: model.TCP, Backend: "db"}},
		Backends: []model.Backend{{Name: "db", Protocol: model.BackendTCP, Groups: []model.EndpointGroup{
			{Cluster: "east", Priority: 0, Endpoints: []model.Endpoint{refusingEndpoint(t), refusingEndpoint(t)}},
			{Cluster: "west", Priority: 1, Endpoints: []model.Endpoint{{Address: standby.Addr(), Port: standby.Port()}}},
		}}},
	})
	for i := range 10 {
		conn, err := net.DialTimeout("tcp", netip.AddrPortFrom(vip, 5432).String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		if err != nil || !strings.Contains(line, "west") {
			t.Fatalf("connection %d: %q, %v; want the priority-1 node's greeting", i, line, err)
		}
	}
}

// blackholeEndpoint is a loopback port that neither accepts nor refuses
// connections: a node that black-holes traffic.
func blackholeEndpoint(t *testing.T) model.Endpoint {
	t.Helper()
	h, err := blackhole.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	if !h.Holds() {
		t.Skip("this kernel accepts connects beyond a full backlog-0 queue; no black hole on loopback")
	}
	return model.Endpoint{Address: h.Addr().Addr(), Port: h.Addr().Port()}
}

// TestGETSurvivesBlackholedPriorityZero: the priority-0 node answers no SYN.
// The cluster's connect_timeout (below the client's patience) fails the
// connect, retry_on connect-failure sends the GET to priority 1, and every
// GET is answered there.
func TestGETSurvivesBlackholedPriorityZero(t *testing.T) {
	standby := startHTTPEcho(t, "west", "west-1", "web")
	vip := netip.MustParseAddr("127.0.31.48")
	e := newEnv(t, true)
	e.apply(failoverFleet(vip, []model.Endpoint{blackholeEndpoint(t)}, []model.Endpoint{standby.endpoint()}, nil))
	c := client(netip.AddrPortFrom(vip, 8080).String(), nil)
	for i := range 5 {
		if r := get(t, c, "http://web.example.com/"); r.status != http.StatusOK || r.reply.Cluster != "west" {
			t.Fatalf("GET %d: status %d from %q, want 200 from west", i, r.status, r.reply.Cluster)
		}
	}
}

// TestTCPConnectionSurvivesBlackholedPriorityZero: L4 with a black-holed
// priority-0 node: the connect times out, tcp_proxy's next attempt goes to
// priority 1 (the node is ejected), and the client's connection is served.
func TestTCPConnectionSurvivesBlackholedPriorityZero(t *testing.T) {
	db := echo.New(echo.Identity{Cluster: "west", Node: "west-1", Service: "db"})
	defer db.Close()
	a, err := db.ServeTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	standby := netip.MustParseAddrPort(a.String())
	vip := netip.MustParseAddr("127.0.31.49")
	e := newEnv(t, true)
	e.apply(&model.Fleet{
		Name: fleetName,
		L4:   []model.L4Service{{Ref: model.Ref{Tenant: "a", Namespace: "ns", Name: "db"}, VIP: vip, Port: 5432, Protocol: model.TCP, Backend: "db"}},
		Backends: []model.Backend{{Name: "db", Protocol: model.BackendTCP, Groups: []model.EndpointGroup{
			{Cluster: "east", Priority: 0, Endpoints: []model.Endpoint{blackholeEndpoint(t)}},
			{Cluster: "west", Priority: 1, Endpoints: []model.Endpoint{{Address: standby.Addr(), Port: standby.Port()}}},
		}}},
	})
	for i := range 3 {
		conn, err := net.DialTimeout("tcp", netip.AddrPortFrom(vip, 5432).String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		if err != nil || !strings.Contains(line, "west") {
			t.Fatalf("connection %d: %q, %v; want the priority-1 node's greeting", i, line, err)
		}
	}
}

// TestPerTryTimeoutEndsAtResponseHeaders: per_try_timeout (a route's
// backend timeout) bounds the wait for response headers, as in Envoy: a
// priority-0 backend that never answers is given up and the GET retried on
// priority 1, while a response whose headers came in time streams past the
// per-try timeout uncut.
func TestPerTryTimeoutEndsAtResponseHeaders(t *testing.T) {
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	primary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow-body" {
			w.WriteHeader(http.StatusOK)
			http.NewResponseController(w).Flush()
			time.Sleep(600 * time.Millisecond) // past the per-try timeout
			_, _ = w.Write([]byte("done"))
			return
		}
		select { // never answers
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(primary.Close)
	ap := netip.MustParseAddrPort(strings.TrimPrefix(primary.URL, "http://"))
	standby := startHTTPEcho(t, "west", "west-1", "web")
	vip := netip.MustParseAddr("127.0.31.50")
	f := failoverFleet(vip, []model.Endpoint{{Address: ap.Addr(), Port: ap.Port()}}, []model.Endpoint{standby.endpoint()},
		&model.Outlier{Consecutive5xx: 1000, BaseEjectionTime: model.Duration(time.Millisecond)})
	f.VirtualHosts[0].Routes[0].Forward.BackendTimeout = model.Duration(300 * time.Millisecond)
	e := newEnv(t, true)
	e.apply(f)
	c := client(netip.AddrPortFrom(vip, 8080).String(), nil)
	if r := get(t, c, "http://web.example.com/slow-body"); r.status != http.StatusOK || r.body != "done" {
		t.Fatalf("slow body: status %d, body %q; want 200 and the whole body from priority 0", r.status, r.body)
	}
	if r := get(t, c, "http://web.example.com/hang"); r.status != http.StatusOK || r.reply.Cluster != "west" {
		t.Fatalf("hanging priority 0: status %d from %q, want 200 from west after the per-try timeout", r.status, r.reply.Cluster)
	}
}
