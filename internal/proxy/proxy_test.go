package proxy

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

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	udpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/udp/udp_proxy/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/go-logr/logr/testr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/fleetlb/fleetlb/internal/echo"
	"github.com/fleetlb/fleetlb/internal/proxy/l4"
	"github.com/fleetlb/fleetlb/internal/proxy/xdsclient"
)

const nodeID = "proxy-1"

// clusterStandIn stands in for upstream.Manager until it exists: round robin over
// the endpoints of each cluster's load assignment, no health checking.
type clusterStandIn struct {
	mu       sync.Mutex
	clusters map[string]bool
	hosts    map[string][]string
	next     int
}

func (m *clusterStandIn) UpdateClusters(cs []*clusterv3.Cluster, removed []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.clusters == nil {
		m.clusters = map[string]bool{}
	}
	for _, c := range cs {
		m.clusters[c.GetName()] = true
	}
	for _, n := range removed {
		delete(m.clusters, n)
	}
}

func (m *clusterStandIn) UpdateLoadAssignments(clas []*endpointv3.ClusterLoadAssignment, removed []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.hosts == nil {
		m.hosts = map[string][]string{}
	}
	for _, n := range removed {
		delete(m.hosts, n)
	}
	for _, cla := range clas {
		delete(m.hosts, cla.GetClusterName())
		for _, le := range cla.GetEndpoints() {
			for _, e := range le.GetLbEndpoints() {
				sa := e.GetEndpoint().GetAddress().GetSocketAddress()
				m.hosts[cla.GetClusterName()] = append(m.hosts[cla.GetClusterName()], net.JoinHostPort(sa.GetAddress(), fmt.Sprint(sa.GetPortValue())))
			}
		}
	}
}

func (m *clusterStandIn) has(cluster string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.clusters[cluster] && len(m.hosts[cluster]) > 0
}

func (m *clusterStandIn) Pick(cluster string, _ []byte) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	hs := m.hosts[cluster]
	if !m.clusters[cluster] || len(hs) == 0 {
		return "", fmt.Errorf("cluster %q: no healthy host", cluster)
	}
	m.next++
	return hs[m.next%len(hs)], nil
}

func (m *clusterStandIn) Report(string, string, bool) {}

func (m *clusterStandIn) StartSession(string) (func(), error) { return func() {}, nil }

func (m *clusterStandIn) DialTCP(ctx context.Context, cluster string, _, _ net.Addr, key []byte) (net.Conn, error) {
	h, err := m.Pick(cluster, key)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", h)
}

func validateCluster(c *clusterv3.Cluster) error {
	if c.GetLbPolicy() == clusterv3.Cluster_MAGLEV {
		return fmt.Errorf("cluster %q: lb_policy MAGLEV is not supported", c.GetName())
	}
	return nil
}

func anyOf(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func addr(port uint32, p corev3.SocketAddress_Protocol) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: "127.0.0.1", Protocol: p, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

func tcpListener(t *testing.T, name, cluster string, idle time.Duration) *listenerv3.Listener {
	tp := &tcpproxyv3.TcpProxy{StatPrefix: name, ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster}, IdleTimeout: durationpb.New(idle)}
	return &listenerv3.Listener{Name: name, Address: addr(0, corev3.SocketAddress_TCP), FilterChains: []*listenerv3.FilterChain{{
		Filters: []*listenerv3.Filter{{Name: l4.TCPProxyFilter, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, tp)}}}}}}
}

func udpListener(t *testing.T, name, cluster string) *listenerv3.Listener {
	cfg := &udpproxyv3.UdpProxyConfig{StatPrefix: name, RouteSpecifier: &udpproxyv3.UdpProxyConfig_Cluster{Cluster: cluster}}
	return &listenerv3.Listener{Name: name, Address: addr(0, corev3.SocketAddress_UDP), UdpListenerConfig: &listenerv3.UdpListenerConfig{},
		ListenerFilters: []*listenerv3.ListenerFilter{{Name: l4.UDPProxyFilter, ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: anyOf(t, cfg)}}}}
}

func edsCluster(name string, policy clusterv3.Cluster_LbPolicy) *clusterv3.Cluster {
	return &clusterv3.Cluster{Name: name, LbPolicy: policy, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}}
}

func cla(cluster string, hostPorts ...string) *endpointv3.ClusterLoadAssignment {
	var lbs []*endpointv3.LbEndpoint
	for _, hp := range hostPorts {
		h, p, _ := net.SplitHostPort(hp)
		var port uint32
		fmt.Sscan(p, &port)
		lbs = append(lbs, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: addr(port, corev3.SocketAddress_TCP)}}})
		_ = h
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: cluster, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}}
}

// fleet is the desired configuration the test edits and publishes.
type fleet struct {
	listeners map[string]*listenerv3.Listener
	clusters  map[string]*clusterv3.Cluster
	endpoints map[string]*endpointv3.ClusterLoadAssignment
	version   int
}

func (f *fleet) publish(t *testing.T, c cache.SnapshotCache) {
	t.Helper()
	f.version++
	res := map[resource.Type][]types.Resource{}
	for _, l := range f.listeners {
		res[resource.ListenerType] = append(res[resource.ListenerType], l)
	}
	for _, cl := range f.clusters {
		res[resource.ClusterType] = append(res[resource.ClusterType], cl)
	}
	for _, e := range f.endpoints {
		res[resource.EndpointType] = append(res[resource.EndpointType], e)
	}
	snap, err := cache.NewSnapshot(fmt.Sprintf("v%d", f.version), res)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetSnapshot(context.Background(), nodeID, snap); err != nil {
		t.Fatal(err)
	}
}

func startXDS(t *testing.T) (cache.SnapshotCache, string, func() []string) {
	t.Helper()
	snapCache := cache.NewSnapshotCache(true, cache.IDHash{}, nil)
	var mu sync.Mutex
	var nacks []string
	record := func(detail string) {
		mu.Lock()
		nacks = append(nacks, detail)
		mu.Unlock()
	}
	srv := server.NewServer(context.Background(), snapCache, server.CallbackFuncs{
		StreamRequestFunc: func(_ int64, r *discoveryv3.DiscoveryRequest) error {
			if r.GetErrorDetail() != nil {
				record(r.GetErrorDetail().GetMessage())
			}
			return nil
		},
		StreamDeltaRequestFunc: func(_ int64, r *discoveryv3.DeltaDiscoveryRequest) error {
			if r.GetErrorDetail() != nil {
				record(r.GetErrorDetail().GetMessage())
			}
			return nil
		},
	})
	g := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	return snapCache, ln.Addr().String(), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), nacks...)
	}
}

func dialGRPC(t *testing.T, xdsAddr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(xdsAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// runProxy runs p until the test ends and waits for its first configuration.
func runProxy(t *testing.T, p *Proxy) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-p.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("proxy never became ready")
	}
}

func startProxy(t *testing.T, xdsAddr string, delta bool, cm *clusterStandIn) *Proxy {
	t.Helper()
	conn := dialGRPC(t, xdsAddr)
	p, err := New(conn, Options{
		Node: &corev3.Node{Id: nodeID, Cluster: "default"}, Delta: delta, Clusters: cm,
		ValidateCluster: validateCluster, DrainTimeout: 5 * time.Second,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
	}, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	runProxy(t, p)
	return p
}

func startEcho(t *testing.T, node string, udp bool) string {
	t.Helper()
	s := echo.New(echo.Identity{Cluster: "c", Node: node, Service: "s"})
	t.Cleanup(func() { s.Close() })
	serve := s.ServeTCP
	if udp {
		serve = s.ServeUDP
	}
	a, err := serve("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return a.String()
}

// tcpClient is a live connection through the proxy.
type tcpClient struct {
	c net.Conn
	r *bufio.Reader
}

func dialThrough(t *testing.T, p *Proxy, listener string) *tcpClient {
	t.Helper()
	a := p.ListenerAddr(listener)
	if a == nil {
		t.Fatalf("listener %s is not bound", listener)
	}
	c, err := net.Dial("tcp", a.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	tc := &tcpClient{c: c, r: bufio.NewReader(c)}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := tc.r.ReadString('\n')
	if err != nil {
		t.Fatalf("%s: no identity line: %v", listener, err)
	}
	if !strings.HasPrefix(line, "cluster=") {
		t.Fatalf("%s: got %q", listener, line)
	}
	return tc
}

// roundTrip proves the connection is alive and still on its upstream.
func (tc *tcpClient) roundTrip(t *testing.T, msg string) {
	t.Helper()
	tc.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(tc.c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(tc.r, buf); err != nil {
		t.Fatalf("connection lost: %v", err)
	}
	if string(buf) != msg {
		t.Fatalf("echo %q, want %q", buf, msg)
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

func TestListenerUpdatesAndLiveConnections(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(fmt.Sprintf("delta=%v", delta), func(t *testing.T) {
			snapCache, xdsAddr, nacks := startXDS(t)
			a1, b1, u1 := startEcho(t, "a1", false), startEcho(t, "b1", false), startEcho(t, "u1", true)
			f := &fleet{
				listeners: map[string]*listenerv3.Listener{
					"vip-a": tcpListener(t, "vip-a", "svc-a", time.Hour),
					"vip-b": tcpListener(t, "vip-b", "svc-b", time.Hour),
					"vip-u": udpListener(t, "vip-u", "svc-u"),
				},
				clusters: map[string]*clusterv3.Cluster{
					"svc-a": edsCluster("svc-a", clusterv3.Cluster_ROUND_ROBIN),
					"svc-b": edsCluster("svc-b", clusterv3.Cluster_ROUND_ROBIN),
					"svc-u": edsCluster("svc-u", clusterv3.Cluster_ROUND_ROBIN),
				},
				endpoints: map[string]*endpointv3.ClusterLoadAssignment{
					"svc-a": cla("svc-a", a1), "svc-b": cla("svc-b", b1), "svc-u": cla("svc-u", u1),
				},
			}
			f.publish(t, snapCache)
			cm := &clusterStandIn{}
			p := startProxy(t, xdsAddr, delta, cm)
			waitFor(t, "endpoints", func() bool { return cm.has("svc-a") && cm.has("svc-b") && cm.has("svc-u") })

			connA := dialThrough(t, p, "vip-a")
			connB := dialThrough(t, p, "vip-b")
			connA.roundTrip(t, "a-0")

			// UDP through the proxy.
			uc, err := net.Dial("udp", p.ListenerAddr("vip-u").String())
			if err != nil {
				t.Fatal(err)
			}
			defer uc.Close()
			uc.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(uc, "ping")
			buf := make([]byte, 512)
			n, err := uc.Read(buf)
			if err != nil || string(buf[:n]) != "cluster=c node=u1 service=s\nping" {
				t.Fatalf("udp reply %q, %v", buf[:n], err)
			}

			// 50 unrelated updates: new clusters and endpoint changes elsewhere. The
			// established connection keeps its upstream throughout.
			for i := range 50 {
				name := fmt.Sprintf("extra-%d", i)
				f.clusters[name] = edsCluster(name, clusterv3.Cluster_ROUND_ROBIN)
				f.endpoints[name] = cla(name, b1)
				f.endpoints["svc-b"] = cla("svc-b", b1, fmt.Sprintf("127.0.0.1:%d", 40000+i))
				f.publish(t, snapCache)
			}
			waitFor(t, "the 50th update", func() bool { return cm.has("extra-49") })
			connA.roundTrip(t, "a-after-50-updates")
			if got := p.ActiveConnections()["vip-a"]; got != 1 {
				t.Errorf("vip-a active connections = %d, want 1", got)
			}

			// Remove vip-b and add vip-c: vip-a's connection is untouched, vip-b's
			// socket is gone, vip-c serves.
			addrB := p.ListenerAddr("vip-b").String()
			delete(f.listeners, "vip-b")
			f.listeners["vip-c"] = tcpListener(t, "vip-c", "svc-b", time.Hour)
			f.publish(t, snapCache)
			waitFor(t, "vip-c", func() bool { return p.ListenerAddr("vip-c") != nil && p.ListenerAddr("vip-b") == nil })
			connA.roundTrip(t, "a-after-listener-change")
			if c, err := net.Dial("tcp", addrB); err == nil {
				c.Close()
				t.Errorf("removed listener vip-b still accepts on %s", addrB)
			}
			dialThrough(t, p, "vip-c").roundTrip(t, "c-0")
			// vip-b's own open connection drains (up to DrainTimeout) instead of being cut.
			connB.roundTrip(t, "b-draining")

			// Change vip-a itself (idle timeout): it keeps its socket, new connections
			// go to the new config, the old one drains and still works.
			addrA := p.ListenerAddr("vip-a").String()
			newA := tcpListener(t, "vip-a", "svc-a", 2*time.Hour)
			f.listeners["vip-a"] = newA
			f.publish(t, snapCache)
			waitFor(t, "vip-a update", func() bool { return p.AckedVersions()[xdsclient.ListenerType] == fmt.Sprintf("v%d", f.version) })
			if got := p.ListenerAddr("vip-a").String(); got != addrA {
				t.Errorf("vip-a moved from %s to %s", addrA, got)
			}
			connA.roundTrip(t, "a-after-own-change")
			dialThrough(t, p, "vip-a").roundTrip(t, "a-new")

			// A NACK: MAGLEV is rejected with the validator's text, traffic continues.
			f.clusters["svc-a"] = edsCluster("svc-a", clusterv3.Cluster_MAGLEV)
			f.publish(t, snapCache)
			waitFor(t, "NACK at the server", func() bool { return len(nacks()) > 0 })
			if got := nacks()[0]; got != `cluster "svc-a": lb_policy MAGLEV is not supported` {
				t.Errorf("error_detail %q", got)
			}
			if n := p.LastNACK(); n == nil || !strings.Contains(n.Detail, "MAGLEV") {
				t.Errorf("LastNACK = %+v", n)
			}
			connA.roundTrip(t, "a-after-nack")
			dialThrough(t, p, "vip-a").roundTrip(t, "a-new-after-nack")

			// An unsupported listener field is NACKed by name; the listener set stays.
			f.clusters["svc-a"] = edsCluster("svc-a", clusterv3.Cluster_ROUND_ROBIN)
			bad := tcpListener(t, "vip-d", "svc-a", time.Hour)
			bad.ListenerFilters = []*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.proxy_protocol"}}
			f.listeners["vip-d"] = bad
			f.publish(t, snapCache)
			waitFor(t, "listener NACK", func() bool {
				n := p.LastNACK()
				return n != nil && strings.Contains(n.Detail, `listener "vip-d": listener_filters`)
			})
			if p.ListenerAddr("vip-d") != nil {
				t.Error("rejected listener vip-d was bound")
			}
			connA.roundTrip(t, "a-after-listener-nack")
		})
	}
}
