package featuretests

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/fleetlb/fleetlb/envoy/translate"
	"github.com/fleetlb/fleetlb/internal/echo"
	"github.com/fleetlb/fleetlb/internal/model"
)

// eventually retries f every 50ms for at most 20s.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	var err error
	for range 400 {
		if err = f(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}

// TestFailoverToPriorityOneByHealthChecks: when every priority-0 endpoint fails its
// HTTP health check, traffic moves to priority 1; when it passes again, it moves back.
func TestFailoverToPriorityOneByHealthChecks(t *testing.T) {
	primary := startHTTPEcho(t, "east", "east-1", "web")
	standby := startHTTPEcho(t, "west", "west-1", "web")
	vip := netip.MustParseAddr("127.0.31.4")
	f := &model.Fleet{
		Name: fleetName,
		HTTP: &model.SharedListener{VIP: vip, Port: 8080},
		Backends: []model.Backend{{
			Name: "web", Protocol: model.BackendHTTP1,
			Groups: []model.EndpointGroup{
				{Cluster: "east", Priority: 0, Endpoints: []model.Endpoint{primary.endpoint()}},
				{Cluster: "west", Priority: 1, Endpoints: []model.Endpoint{standby.endpoint()}},
			},
			HealthCheck: &model.HealthCheck{Type: model.HealthHTTP, Path: "/healthz",
				Interval: model.Duration(100 * time.Millisecond), Timeout: model.Duration(200 * time.Millisecond),
				UnhealthyThreshold: 1, HealthyThreshold: 1},
		}},
		VirtualHosts: []model.VirtualHost{{Name: "web", Hostnames: []string{"web.example.com"},
			Routes: []model.Route{{Name: "all", Match: prefix("/"), Forward: fwd("web")}}}},
	}
	e := newEnv(t, true)
	e.apply(f)
	c := client(netip.AddrPortFrom(vip, 8080).String(), nil)
	servedBy := func(want string) func() error {
		return func() error {
			for range 5 {
				if r := get(t, c, "http://web.example.com/"); r.reply.Cluster != want {
					return fmt.Errorf("served by %q (status %d), want %q", r.reply.Cluster, r.status, want)
				}
			}
			return nil
		}
	}
	eventually(t, "priority 0 serves while healthy", servedBy("east"))

	primary.srv.Close()
	eventually(t, "priority 1 takes over when priority 0 fails its health check", servedBy("west"))

	again := echo.New(echo.Identity{Cluster: "east", Node: "east-1", Service: "web"})
	if _, err := again.ServeHTTP(primary.addr.String(), false); err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	eventually(t, "priority 0 serves again once healthy", servedBy("east"))
}

// TestTCPConnectionSurvivesFiftyUnrelatedUpdates: an established L4 connection keeps
// working while listeners, routes, clusters and endpoints around it change 50 times.
func TestTCPConnectionSurvivesFiftyUnrelatedUpdates(t *testing.T) {
	db := echo.New(echo.Identity{Cluster: "a", Node: "db-1", Service: "db"})
	defer db.Close()
	a, err := db.ServeTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	web := startHTTPEcho(t, "a", "web-1", "web")
	dbAddr := netip.MustParseAddrPort(a.String())
	vip := netip.MustParseAddr("127.0.31.5")
	base := func(i int) *model.Fleet {
		f := &model.Fleet{
			Name: fleetName,
			HTTP: &model.SharedListener{VIP: vip, Port: 8080},
			L4:   []model.L4Service{{Ref: model.Ref{Tenant: "a", Namespace: "ns", Name: "db"}, VIP: vip, Port: 5432, Protocol: model.TCP, Backend: "db"}},
			Backends: []model.Backend{
				{Name: "db", Protocol: model.BackendTCP, Groups: []model.EndpointGroup{{Cluster: "a", Endpoints: []model.Endpoint{{Address: dbAddr.Addr(), Port: dbAddr.Port()}}}}},
				httpBackend("web", model.BackendHTTP1, web),
			},
			VirtualHosts: []model.VirtualHost{{Name: "web", Hostnames: []string{"web.example.com"},
				Routes: []model.Route{{Name: fmt.Sprintf("r%d", i), Match: prefix(fmt.Sprintf("/v%d", i)), Forward: fwd("web")}}}},
		}
		// Every other update adds a listener and a cluster on another port; every third
		// changes the web backend's endpoints.
		if i%2 == 1 {
			f.L4 = append(f.L4, model.L4Service{Ref: model.Ref{Tenant: "a", Namespace: "ns", Name: "extra"}, VIP: vip, Port: uint16(6000 + i), Protocol: model.TCP, Backend: "extra"})
			f.Backends = append(f.Backends, model.Backend{Name: "extra", Protocol: model.BackendTCP,
				Groups: []model.EndpointGroup{{Cluster: "a", Endpoints: []model.Endpoint{{Address: dbAddr.Addr(), Port: dbAddr.Port()}}}}})
		}
		if i%3 == 0 {
			f.Backends[1].Groups[0].Endpoints = append(f.Backends[1].Groups[0].Endpoints, model.Endpoint{Address: netip.MustParseAddr("127.0.0.1"), Port: uint16(1 + i)})
		}
		return f
	}
	e := newEnv(t, true)
	e.apply(base(0))

	conn, err := net.DialTimeout("tcp", netip.AddrPortFrom(vip, 5432).String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rd := bufio.NewReader(conn)
	if line, err := rd.ReadString('\n'); err != nil || !strings.Contains(line, "node=db-1") {
		t.Fatalf("identity line: %q %v", line, err)
	}
	roundTrip := func(i int) {
		t.Helper()
		msg := fmt.Sprintf("ping %d\n", i)
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte(msg)); err != nil {
			t.Fatalf("after update %d: write: %v", i, err)
		}
		if got, err := rd.ReadString('\n'); err != nil || got != msg {
			t.Fatalf("after update %d: echo %q, %v", i, got, err)
		}
	}
	for i := 1; i <= 50; i++ {
		e.apply(base(i))
		roundTrip(i)
	}
	if n := e.proxy.ActiveConnections()[translate.L4ListenerName(model.TCP, vip.String(), 5432)]; n != 1 {
		t.Errorf("active connections on the db listener: %d, want the one held", n)
	}
}

// TestDeltaSendsOnlyWhatChanged counts resources on the wire.
func TestDeltaSendsOnlyWhatChanged(t *testing.T) {
	web := startHTTPEcho(t, "a", "web-1", "web")
	vip := netip.MustParseAddr("127.0.31.6")
	fleet := func(extraPort uint16, webPort uint16) *model.Fleet {
		f := &model.Fleet{Name: fleetName}
		for i := range 10 {
			name := fmt.Sprintf("svc-%d", i)
			port := uint16(7000 + i)
			ep := web.endpoint()
			if i == 3 {
				ep.Port = webPort
			}
			f.L4 = append(f.L4, model.L4Service{Ref: model.Ref{Tenant: "a", Namespace: "ns", Name: name}, VIP: vip, Port: port, Protocol: model.TCP, Backend: name})
			f.Backends = append(f.Backends, model.Backend{Name: name, Protocol: model.BackendTCP, Groups: []model.EndpointGroup{{Cluster: "a", Endpoints: []model.Endpoint{ep}}}})
		}
		if extraPort != 0 {
			f.L4 = append(f.L4, model.L4Service{Ref: model.Ref{Tenant: "a", Namespace: "ns", Name: "extra"}, VIP: vip, Port: extraPort, Protocol: model.TCP, Backend: "extra"})
			f.Backends = append(f.Backends, model.Backend{Name: "extra", Protocol: model.BackendTCP, Groups: []model.EndpointGroup{{Cluster: "a", Endpoints: []model.Endpoint{web.endpoint()}}}})
		}
		return f
	}
	e := newEnv(t, true)
	e.apply(fleet(0, web.addr.Port()))
	types := map[string]string{
		"listeners": resource.ListenerType, "clusters": resource.ClusterType, "endpoints": resource.EndpointType,
		"routes": resource.RouteType, "secrets": resource.SecretType,
	}
	expect := func(step string, want map[string][2]int) {
		t.Helper()
		for short, url := range types {
			sent, removed := e.wire.count(url)
			if w := want[short]; sent != w[0] || removed != w[1] {
				t.Errorf("%s: %s sent %d removed %d, want %d and %d", step, short, sent, removed, w[0], w[1])
			}
		}
	}

	e.wire.reset()
	e.apply(fleet(0, 1))
	expect("one backend's endpoints changed", map[string][2]int{"endpoints": {1, 0}})

	e.wire.reset()
	e.apply(fleet(7100, 1))
	expect("one service added", map[string][2]int{"listeners": {1, 0}, "clusters": {1, 0}, "endpoints": {1, 0}})

	e.wire.reset()
	e.apply(fleet(0, 1))
	expect("one service removed", map[string][2]int{"listeners": {0, 1}, "clusters": {0, 1}, "endpoints": {0, 1}})
}

// TestNACKKeepsTheLastGoodConfiguration: a route configuration the proxy does not
// support is NACKed with a detail naming the field, the server records it, and the
// proxy keeps serving what it had.
func TestNACKKeepsTheLastGoodConfiguration(t *testing.T) {
	web := startHTTPEcho(t, "a", "web-1", "web")
	v2 := startHTTPEcho(t, "a", "v2-1", "web-v2")
	vip := netip.MustParseAddr("127.0.31.7")
	fleet := func(backend string) *model.Fleet {
		return &model.Fleet{
			Name:     fleetName,
			HTTP:     &model.SharedListener{VIP: vip, Port: 8080},
			Backends: []model.Backend{httpBackend("web", model.BackendHTTP1, web), httpBackend("v2", model.BackendHTTP1, v2)},
			VirtualHosts: []model.VirtualHost{{Name: "web", Hostnames: []string{"web.example.com"},
				Routes: []model.Route{{Name: "all", Match: prefix("/"), Forward: fwd(backend)}}}},
		}
	}
	e := newEnv(t, true)
	e.apply(fleet("web"))
	c := client(netip.AddrPortFrom(vip, 8080).String(), nil)
	if r := get(t, c, "http://web.example.com/"); r.reply.Node != "web-1" {
		t.Fatalf("before: %q", r.reply.Node)
	}

	out, err := translate.Translate(fleet("v2"))
	if err != nil {
		t.Fatal(err)
	}
	rc := proto.Clone(out.Routes[0]).(*routev3.RouteConfiguration)
	rc.VirtualHosts[0].Routes[0].GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx,retriable-4xx"}
	out.Routes[0] = rc
	e.xds.Set(fleetName, out.ByType())
	eventually(t, "the NACK is recorded", func() error {
		for _, n := range e.xds.NACKs(fleetName) {
			if strings.Contains(n.Detail, "retry_on") {
				return nil
			}
		}
		return fmt.Errorf("NACKs: %v", e.xds.NACKs(fleetName))
	})
	if n := e.proxy.LastNACK(); n == nil || !strings.Contains(n.Detail, `retry_policy: retry_on "retriable-4xx" is not supported`) {
		t.Errorf("proxy's last NACK: %+v", n)
	}
	if r := get(t, c, "http://web.example.com/"); r.reply.Node != "web-1" {
		t.Errorf("after the NACK the last good route must serve; went to %q", r.reply.Node)
	}

	e.apply(fleet("v2"))
	if r := get(t, c, "http://web.example.com/"); r.reply.Node != "v2-1" {
		t.Errorf("a good update after the NACK: went to %q", r.reply.Node)
	}
}

// TestReconnectingProxyGetsTheCurrentSnapshot: while the xDS server is down the
// proxy keeps serving; a change made meanwhile arrives when it reconnects.
func TestReconnectingProxyGetsTheCurrentSnapshot(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(fmt.Sprintf("delta=%v", delta), func(t *testing.T) {
			web := startHTTPEcho(t, "a", "web-1", "web")
			v2 := startHTTPEcho(t, "a", "v2-1", "web-v2")
			vip := netip.MustParseAddr("127.0.31.8")
			fleet := func(backend string) *model.Fleet {
				return &model.Fleet{
					Name:     fleetName,
					HTTP:     &model.SharedListener{VIP: vip, Port: 8080},
					Backends: []model.Backend{httpBackend("web", model.BackendHTTP1, web), httpBackend("v2", model.BackendHTTP1, v2)},
					VirtualHosts: []model.VirtualHost{{Name: "web", Hostnames: []string{"web.example.com"},
						Routes: []model.Route{{Name: "all", Match: prefix("/"), Forward: fwd(backend)}}}},
				}
			}
			e := newEnv(t, delta)
			e.apply(fleet("web"))
			c := client(netip.AddrPortFrom(vip, 8080).String(), nil)
			var gen uint64
			e.restartXDS(func() {
				out, err := translate.Translate(fleet("v2"))
				if err != nil {
					t.Fatal(err)
				}
				gen = e.xds.Set(fleetName, out.ByType())
				if r := get(t, c, "http://web.example.com/"); r.reply.Node != "web-1" {
					t.Errorf("while disconnected the proxy must keep its configuration; went to %q", r.reply.Node)
				}
			})
			e.waitAcked(gen)
			if r := get(t, c, "http://web.example.com/"); r.reply.Node != "v2-1" {
				t.Errorf("after reconnecting: went to %q, want the change made while disconnected", r.reply.Node)
			}
		})
	}
}
