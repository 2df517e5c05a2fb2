package l4

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	udpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/udp/udp_proxy/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/fleetlb/fleetlb/internal/echo"
	"github.com/go-logr/logr/testr"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// roundRobin stands in for upstream.Manager: a static host list per cluster.
type roundRobin struct {
	mu    sync.Mutex
	hosts map[string][]string
	next  int
}

func (r *roundRobin) Pick(cluster string, _ []byte) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	hs := r.hosts[cluster]
	if len(hs) == 0 {
		return "", fmt.Errorf("cluster %q has no healthy host", cluster)
	}
	r.next++
	return hs[r.next%len(hs)], nil
}

func (r *roundRobin) Report(string, string, bool) {}

func (r *roundRobin) StartSession(string) (func(), error) { return func() {}, nil }

func (r *roundRobin) DialTCP(ctx context.Context, cluster string, _, _ net.Addr, key []byte) (net.Conn, error) {
	host, err := r.Pick(cluster, key)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", host)
}

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func socketAddress(proto corev3.SocketAddress_Protocol) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: "127.0.0.1", Protocol: proto, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 1}}}}
}

func tcpListener(t testing.TB, cluster string, idle time.Duration, allow ...string) *listenerv3.Listener {
	t.Helper()
	var filters []*listenerv3.Filter
	if len(allow) > 0 {
		var principals []*rbacconfigv3.Principal
		for _, a := range allow {
			ip, bits, _ := strings.Cut(a, "/")
			var n uint32
			fmt.Sscan(bits, &n)
			principals = append(principals, &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_RemoteIp{
				RemoteIp: &corev3.CidrRange{AddressPrefix: ip, PrefixLen: wrapperspb.UInt32(n)}}})
		}
		filters = append(filters, &listenerv3.Filter{Name: RBACFilter, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, &rbacv3.RBAC{
			StatPrefix: "rbac", Rules: &rbacconfigv3.RBAC{Action: rbacconfigv3.RBAC_ALLOW, Policies: map[string]*rbacconfigv3.Policy{
				"source-ranges": {Permissions: []*rbacconfigv3.Permission{{Rule: &rbacconfigv3.Permission_Any{Any: true}}}, Principals: principals}}}})}})
	}
	tp := &tcpproxyv3.TcpProxy{StatPrefix: "tcp", ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster}}
	if idle > 0 {
		tp.IdleTimeout = durationpb.New(idle)
	}
	filters = append(filters, &listenerv3.Filter{Name: TCPProxyFilter, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, tp)}})
	return &listenerv3.Listener{Name: "tcp-" + cluster, Address: socketAddress(corev3.SocketAddress_TCP),
		FilterChains: []*listenerv3.FilterChain{{Filters: filters}}}
}

func udpListener(t *testing.T, cluster string, idle time.Duration) *listenerv3.Listener {
	t.Helper()
	cfg := &udpproxyv3.UdpProxyConfig{StatPrefix: "udp", RouteSpecifier: &udpproxyv3.UdpProxyConfig_Cluster{Cluster: cluster}, IdleTimeout: durationpb.New(idle)}
	return &listenerv3.Listener{Name: "udp-" + cluster, Address: socketAddress(corev3.SocketAddress_UDP),
		UdpListenerConfig: &listenerv3.UdpListenerConfig{},
		ListenerFilters:   []*listenerv3.ListenerFilter{{Name: UDPProxyFilter, ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(t, cfg)}}}}
}

func startEcho(t *testing.T, name, proto string) string {
	t.Helper()
	s := echo.New(echo.Identity{Cluster: "c", Node: name, Service: "s"})
	t.Cleanup(func() { s.Close() })
	var a net.Addr
	var err error
	if proto == "udp" {
		a, err = s.ServeUDP("127.0.0.1:0")
	} else {
		a, err = s.ServeTCP("127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	return a.String()
}

func serveTCP(t *testing.T, l *listenerv3.Listener, up Upstreams) (*TCPListener, string) {
	t.Helper()
	tl, err := NewTCPListener(l, up, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- tl.Serve(ln) }()
	t.Cleanup(func() {
		tl.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return tl, ln.Addr().String()
}

func TestTCPProxyHalfClose(t *testing.T) {
	backend := startEcho(t, "n1", "tcp")
	tl, addr := serveTCP(t, tcpListener(t, "svc", 0), &roundRobin{hosts: map[string][]string{"svc": {backend}}})

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "hello"); err != nil {
		t.Fatal(err)
	}
	// Half-close: the upstream sees EOF, still answers, then closes its side.
	c.(*net.TCPConn).CloseWrite()
	all, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := "cluster=c node=n1 service=s\nhello"; string(all) != want {
		t.Errorf("got %q, want %q", all, want)
	}
	waitFor(t, "connection count back to 0", func() bool { return tl.ActiveConnections() == 0 })
}

func TestTCPProxyRBAC(t *testing.T) {
	backend := startEcho(t, "n1", "tcp")
	up := &roundRobin{hosts: map[string][]string{"svc": {backend}}}
	for _, tc := range []struct {
		allow   string
		allowed bool
	}{{"10.0.0.0/8", false}, {"127.0.0.0/8", true}, {"127.0.0.1/32", true}, {"127.0.0.2/32", false}} {
		t.Run(tc.allow, func(t *testing.T) {
			_, addr := serveTCP(t, tcpListener(t, "svc", 0, tc.allow), up)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if tc.allowed && (err != nil || !strings.Contains(line, "node=n1")) {
				t.Errorf("allowed source: got %q, %v", line, err)
			}
			if !tc.allowed && err == nil {
				t.Errorf("denied source got data %q", line)
			}
		})
	}
}

func TestTCPIdleTimeout(t *testing.T) {
	backend := startEcho(t, "n1", "tcp")
	_, addr := serveTCP(t, tcpListener(t, "svc", 50*time.Millisecond), &roundRobin{hosts: map[string][]string{"svc": {backend}}})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	// Idle in both directions: the proxy closes the connection.
	if _, err := r.ReadByte(); err != io.EOF {
		t.Errorf("after idle timeout read returned %v, want EOF", err)
	}
}

func TestUDPSessionsAndAffinity(t *testing.T) {
	b1, b2 := startEcho(t, "n1", "udp"), startEcho(t, "n2", "udp")
	up := &roundRobin{hosts: map[string][]string{"svc": {b1, b2}}}
	ul, err := NewUDPListener(udpListener(t, "svc", 100*time.Millisecond), up, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go ul.Serve(pc)
	defer ul.Close()

	ask := func(c net.Conn, msg string) string {
		t.Helper()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1024)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		line, payload, _ := strings.Cut(string(buf[:n]), "\n")
		if payload != msg {
			t.Errorf("payload %q, want %q", payload, msg)
		}
		id, err := echo.ParseLine(line)
		if err != nil {
			t.Fatal(err)
		}
		return id.Node
	}
	clients := make([]net.Conn, 2)
	nodes := make([]string, 2)
	for i := range clients {
		c, err := net.Dial("udp", pc.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients[i] = c
		nodes[i] = ask(c, fmt.Sprintf("first-%d", i))
	}
	if nodes[0] == nodes[1] {
		t.Errorf("two clients on one host %s; round robin should spread sessions", nodes[0])
	}
	// Every datagram of a session goes to the host picked for the session.
	for round := range 5 {
		for i, c := range clients {
			if got := ask(c, fmt.Sprintf("r%d", round)); got != nodes[i] {
				t.Errorf("client %d moved from %s to %s", i, nodes[i], got)
			}
		}
	}
	if got := ul.ActiveConnections(); got != 2 {
		t.Errorf("sessions = %d, want 2", got)
	}
	waitFor(t, "idle sessions to expire", func() bool { return ul.ActiveConnections() == 0 })
}

func TestValidateNamesField(t *testing.T) {
	weighted := tcpListener(t, "svc", 0)
	weighted.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, &tcpproxyv3.TcpProxy{
		StatPrefix: "x", ClusterSpecifier: &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpproxyv3.TcpProxy_WeightedCluster{}}})}
	udpHash := udpListener(t, "svc", time.Second)
	udpHash.ListenerFilters[0].ConfigType = &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(t, &udpproxyv3.UdpProxyConfig{
		StatPrefix: "u", RouteSpecifier: &udpproxyv3.UdpProxyConfig_Cluster{Cluster: "svc"}, UsePerPacketLoadBalancing: true})}
	affinity := tcpListener(t, "svc", 0)
	affinity.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, &tcpproxyv3.TcpProxy{
		StatPrefix: "x", ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "svc"},
		HashPolicy: []*typev3.HashPolicy{{PolicySpecifier: &typev3.HashPolicy_SourceIp_{SourceIp: &typev3.HashPolicy_SourceIp{}}}}})}
	byKey := tcpListener(t, "svc", 0)
	byKey.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, &tcpproxyv3.TcpProxy{
		StatPrefix: "x", ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "svc"},
		HashPolicy: []*typev3.HashPolicy{{PolicySpecifier: &typev3.HashPolicy_FilterState_{FilterState: &typev3.HashPolicy_FilterState{Key: "k"}}}}})}
	twoChains := tcpListener(t, "svc", 0)
	twoChains.FilterChains = append(twoChains.FilterChains, twoChains.FilterChains[0])
	for name, tc := range map[string]struct {
		l    *listenerv3.Listener
		want string
	}{
		"weighted clusters":  {weighted, "weighted_clusters"},
		"per packet lb":      {udpHash, "use_per_packet_load_balancing"},
		"two chains":         {twoChains, "filter_chains"},
		"source ip affinity": {affinity, ""},
		"filter state hash":  {byKey, "hash_policy[0]"},
		"valid tcp":          {tcpListener(t, "svc", time.Second, "10.0.0.0/8"), ""},
		"valid udp":          {udpListener(t, "svc", time.Second), ""},
	} {
		t.Run(name, func(t *testing.T) {
			err := ValidateListener(tc.l)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one naming %s", err, tc.want)
			}
		})
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
