package xdsclient

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
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
)

const nodeID = "proxy-1"

// xdsServer is go-control-plane's snapshot cache and server over real gRPC.
type xdsServer struct {
	cache cache.SnapshotCache
	addr  string
	grpc  *grpc.Server

	mu        sync.Mutex
	nackSeen  []string // error_detail messages received
	deltaSent map[string]int
}

func startServer(t *testing.T, snapCache cache.SnapshotCache, addr string) *xdsServer {
	t.Helper()
	s := &xdsServer{cache: snapCache, deltaSent: map[string]int{}}
	cb := server.CallbackFuncs{
		StreamRequestFunc: func(_ int64, r *discoveryv3.DiscoveryRequest) error {
			if r.GetErrorDetail() != nil {
				s.mu.Lock()
				s.nackSeen = append(s.nackSeen, r.GetErrorDetail().GetMessage())
				s.mu.Unlock()
			}
			return nil
		},
		StreamDeltaRequestFunc: func(_ int64, r *discoveryv3.DeltaDiscoveryRequest) error {
			if r.GetErrorDetail() != nil {
				s.mu.Lock()
				s.nackSeen = append(s.nackSeen, r.GetErrorDetail().GetMessage())
				s.mu.Unlock()
			}
			return nil
		},
		StreamDeltaResponseFunc: func(_ int64, _ *discoveryv3.DeltaDiscoveryRequest, r *discoveryv3.DeltaDiscoveryResponse) {
			s.mu.Lock()
			s.deltaSent[r.GetTypeUrl()] += len(r.GetResources())
			s.mu.Unlock()
		},
	}
	srv := server.NewServer(context.Background(), snapCache, cb)
	s.grpc = grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(s.grpc, srv)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	go s.grpc.Serve(ln)
	t.Cleanup(s.grpc.Stop)
	return s
}

func (s *xdsServer) nacks() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.nackSeen)
}

func (s *xdsServer) sent(typeURL string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deltaSent[typeURL]
}

func snapshot(t *testing.T, version string, clusters ...string) *cache.Snapshot {
	t.Helper()
	var cs, es []types.Resource
	for _, c := range clusters {
		cs = append(cs, &clusterv3.Cluster{Name: c, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}})
		es = append(es, &endpointv3.ClusterLoadAssignment{ClusterName: c})
	}
	snap, err := cache.NewSnapshot(version, map[resource.Type][]types.Resource{
		resource.ClusterType:  cs,
		resource.EndpointType: es,
		resource.ListenerType: {&listenerv3.Listener{Name: "l-" + version}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// recorder is a Handler like the proxy's: CDS drives the EDS watch, a cluster named
// "bad" is rejected.
type recorder struct {
	client *Client
	mu     sync.Mutex
	state  map[string][]string
	notify chan struct{}
}

func (r *recorder) Handle(typeURL string, res map[string]proto.Message) error {
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range res {
			if !yield(n) {
				return
			}
		}
	})
	if typeURL == ClusterType {
		if slices.Contains(names, "bad") {
			return fmt.Errorf(`cluster "bad": lb_policy MAGLEV is not supported`)
		}
		r.client.Watch(EndpointType, names)
	}
	r.mu.Lock()
	r.state[typeURL] = names
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
	return nil
}

func (r *recorder) get(typeURL string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state[typeURL]
}

// eventually waits (bounded) until cond holds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func startClient(t *testing.T, addr string, delta bool) (*Client, *recorder) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	rec := &recorder{state: map[string][]string{}, notify: make(chan struct{}, 1)}
	c := New(conn, rec, Options{Node: &corev3.Node{Id: nodeID, Cluster: "fleet"}, Delta: delta, MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}, testr.New(t))
	rec.client = c
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return c, rec
}

func TestSubscribeAckNackReconnect(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(fmt.Sprintf("delta=%v", delta), func(t *testing.T) {
			snapCache := cache.NewSnapshotCache(true, cache.IDHash{}, nil)
			if err := snapCache.SetSnapshot(context.Background(), nodeID, snapshot(t, "v1", "a", "b")); err != nil {
				t.Fatal(err)
			}
			srv := startServer(t, snapCache, "127.0.0.1:0")
			c, rec := startClient(t, srv.addr, delta)

			eventually(t, "CDS and EDS of v1", func() bool {
				return slices.Equal(rec.get(ClusterType), []string{"a", "b"}) &&
					slices.Equal(rec.get(EndpointType), []string{"a", "b"}) &&
					slices.Equal(rec.get(ListenerType), []string{"l-v1"})
			})
			if !delta {
				eventually(t, "ACK of v1", func() bool { return c.AckedVersions()[ClusterType] == "v1" })
			}

			// A rejected cluster set: NACK with the validator's text, old set kept.
			if err := snapCache.SetSnapshot(context.Background(), nodeID, snapshot(t, "v2", "a", "bad")); err != nil {
				t.Fatal(err)
			}
			eventually(t, "NACK at the server", func() bool { return len(srv.nacks()) > 0 })
			if got := srv.nacks()[0]; got != `cluster "bad": lb_policy MAGLEV is not supported` {
				t.Errorf("error_detail = %q", got)
			}
			if n := c.LastNACK(); n == nil || n.TypeURL != ClusterType {
				t.Errorf("LastNACK = %+v", n)
			}
			if got := rec.get(ClusterType); !slices.Equal(got, []string{"a", "b"}) {
				t.Errorf("after NACK clusters = %v, want the previous [a b]", got)
			}
			if !delta && c.AckedVersions()[ClusterType] != "v1" {
				t.Errorf("acked version after NACK = %q, want v1", c.AckedVersions()[ClusterType])
			}

			// The server goes away; on its return with a new snapshot the client
			// reconnects and gets the current one.
			addr := srv.addr
			srv.grpc.Stop()
			if err := snapCache.SetSnapshot(context.Background(), nodeID, snapshot(t, "v3", "c")); err != nil {
				t.Fatal(err)
			}
			startServer(t, snapCache, addr)
			eventually(t, "v3 after reconnect", func() bool {
				return slices.Equal(rec.get(ClusterType), []string{"c"}) &&
					slices.Equal(rec.get(EndpointType), []string{"c"}) &&
					slices.Equal(rec.get(ListenerType), []string{"l-v3"})
			})
		})
	}
}

// Delta pushes only what changed: one new cluster in a snapshot of many is one
// resource on the wire.
func TestDeltaSendsOnlyChanges(t *testing.T) {
	snapCache := cache.NewSnapshotCache(true, cache.IDHash{}, nil)
	clusters := []string{"c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"}
	if err := snapCache.SetSnapshot(context.Background(), nodeID, snapshot(t, "v1", clusters...)); err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, snapCache, "127.0.0.1:0")
	_, rec := startClient(t, srv.addr, true)
	eventually(t, "10 clusters", func() bool { return len(rec.get(EndpointType)) == 10 })
	before := srv.sent(ClusterType)
	if before != 10 {
		t.Fatalf("initial CDS resources sent = %d, want 10", before)
	}
	if err := snapCache.SetSnapshot(context.Background(), nodeID, snapshot(t, "v2", append(clusters, "c10")...)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "11 clusters", func() bool { return len(rec.get(EndpointType)) == 11 })
	if got := srv.sent(ClusterType) - before; got != 1 {
		t.Errorf("CDS resources sent for one added cluster = %d, want 1", got)
	}
}

// updates records what an Updater is handed per type.
type updates struct {
	mu      sync.Mutex
	changed map[string][]string // names handed as changed, over all calls
	removed map[string][]string
}

func (u *updates) Update(typeURL string, changed map[string]proto.Message, removed []string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	for n := range changed {
		u.changed[typeURL] = append(u.changed[typeURL], n)
	}
	u.removed[typeURL] = append(u.removed[typeURL], removed...)
	return nil
}

func (u *updates) get(typeURL string) (changed, removed []string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Sorted(slices.Values(u.changed[typeURL])), slices.Sorted(slices.Values(u.removed[typeURL]))
}

func (u *updates) reset() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.changed, u.removed = map[string][]string{}, map[string][]string{}
}

// TestUpdaterGetsOnlyWhatChanged: a resource is handed to the Updater when it
// is new or its content changed, never again for an unchanged one (also when
// state of the world sends every resource again, and after a reconnect), and
// removed names are handed once.
func TestUpdaterGetsOnlyWhatChanged(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(fmt.Sprintf("delta=%v", delta), func(t *testing.T) {
			snapCache := cache.NewSnapshotCache(true, cache.IDHash{}, nil)
			set := func(version string, clusters ...*clusterv3.Cluster) {
				t.Helper()
				res := map[resource.Type][]types.Resource{resource.ListenerType: {&listenerv3.Listener{Name: "l"}}}
				for _, c := range clusters {
					res[resource.ClusterType] = append(res[resource.ClusterType], c)
				}
				snap, err := cache.NewSnapshot(version, res)
				if err != nil {
					t.Fatal(err)
				}
				if err := snapCache.SetSnapshot(context.Background(), nodeID, snap); err != nil {
					t.Fatal(err)
				}
			}
			cl := func(name string, lb clusterv3.Cluster_LbPolicy) *clusterv3.Cluster {
				return &clusterv3.Cluster{Name: name, LbPolicy: lb}
			}
			set("v1", cl("a", clusterv3.Cluster_ROUND_ROBIN), cl("b", clusterv3.Cluster_ROUND_ROBIN), cl("c", clusterv3.Cluster_ROUND_ROBIN))
			srv := startServer(t, snapCache, "127.0.0.1:0")
			conn, err := grpc.NewClient(srv.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			u := &updates{}
			u.reset()
			c := NewUpdating(conn, u, Options{Node: &corev3.Node{Id: nodeID}, Delta: delta, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}, testr.New(t))
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { c.Run(ctx); close(done) }()
			t.Cleanup(func() { cancel(); <-done })
			eventually(t, "v1 ACKed", func() bool { return c.AckedVersions()[ClusterType] == "v1" })
			if changed, _ := u.get(ClusterType); !slices.Equal(changed, []string{"a", "b", "c"}) {
				t.Fatalf("first response handed %v, want [a b c]", changed)
			}

			// b changes, c goes, a stays as it was.
			u.reset()
			set("v2", cl("a", clusterv3.Cluster_ROUND_ROBIN), cl("b", clusterv3.Cluster_RING_HASH))
			eventually(t, "v2 ACKed", func() bool { return c.AckedVersions()[ClusterType] == "v2" })
			changed, removed := u.get(ClusterType)
			if !slices.Equal(changed, []string{"b"}) || !slices.Equal(removed, []string{"c"}) {
				t.Errorf("v2 handed changed %v removed %v, want [b] and [c]", changed, removed)
			}

			// The server restarts: the client asks for everything again and
			// is sent it (SotW: all of it), yet nothing changed.
			u.reset()
			addr := srv.addr
			srv.grpc.Stop()
			set("v3", cl("a", clusterv3.Cluster_ROUND_ROBIN), cl("b", clusterv3.Cluster_RING_HASH))
			startServer(t, snapCache, addr)
			eventually(t, "v3 ACKed", func() bool { return c.AckedVersions()[ClusterType] == "v3" })
			if changed, removed := u.get(ClusterType); len(changed) != 0 || len(removed) != 0 {
				t.Errorf("after a reconnect with the same clusters: changed %v removed %v, want nothing", changed, removed)
			}
		})
	}
}

// sets is an Updater that keeps the names of the accepted set per type.
type sets struct {
	mu   sync.Mutex
	have map[string]map[string]bool
}

func (s *sets) Update(typeURL string, changed map[string]proto.Message, removed []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	set := s.have[typeURL]
	if set == nil {
		set = map[string]bool{}
		s.have[typeURL] = set
	}
	for _, n := range removed {
		delete(set, n)
	}
	for n := range changed {
		set[n] = true
	}
	return nil
}

func (s *sets) get(typeURL string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.have[typeURL]))
}

// TestWatchChangesFollowsSubscription: names added and removed one change at
// a time are what the Updater holds, in delta xDS each request names only
// what changed, a name both added and removed stays, and a name removed while
// the server is away is dropped once the stream is back.
func TestWatchChangesFollowsSubscription(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(fmt.Sprintf("delta=%v", delta), func(t *testing.T) {
			// Not ADS mode: in it go-control-plane answers a state-of-the-world
			// EDS request only when it names every load assignment.
			snapCache := cache.NewSnapshotCache(false, cache.IDHash{}, nil)
			if err := snapCache.SetSnapshot(context.Background(), nodeID, snapshot(t, "v1", "c0", "c1", "c2", "c3")); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var subs, unsubs [][]string // per delta EDS request
			cb := server.CallbackFuncs{StreamDeltaRequestFunc: func(_ int64, r *discoveryv3.DeltaDiscoveryRequest) error {
				if r.GetTypeUrl() == EndpointType && (len(r.GetResourceNamesSubscribe())+len(r.GetResourceNamesUnsubscribe()) > 0) {
					mu.Lock()
					subs, unsubs = append(subs, r.GetResourceNamesSubscribe()), append(unsubs, r.GetResourceNamesUnsubscribe())
					mu.Unlock()
				}
				return nil
			}}
			g := grpc.NewServer()
			discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, server.NewServer(context.Background(), snapCache, cb))
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			go g.Serve(ln)
			t.Cleanup(func() { g.Stop() })
			lastRequest := func() (sub, unsub []string) {
				mu.Lock()
				defer mu.Unlock()
				if len(subs) == 0 {
					return nil, nil
				}
				return slices.Sorted(slices.Values(subs[len(subs)-1])), slices.Sorted(slices.Values(unsubs[len(unsubs)-1]))
			}

			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			s := &sets{have: map[string]map[string]bool{}}
			c := NewUpdating(conn, s, Options{Node: &corev3.Node{Id: nodeID}, Delta: delta, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}, testr.New(t))
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { c.Run(ctx); close(done) }()
			t.Cleanup(func() { cancel(); <-done })
			eventually(t, "CDS", func() bool { return len(s.get(ClusterType)) == 4 })

			c.WatchChanges(EndpointType, []string{"c0", "c1"}, nil)
			eventually(t, "EDS c0 c1", func() bool { return slices.Equal(s.get(EndpointType), []string{"c0", "c1"}) })
			c.WatchChanges(EndpointType, []string{"c2"}, []string{"c0"})
			eventually(t, "EDS c1 c2", func() bool { return slices.Equal(s.get(EndpointType), []string{"c1", "c2"}) })
			if delta {
				eventually(t, "the request of the change", func() bool {
					sub, unsub := lastRequest()
					return slices.Equal(sub, []string{"c2"}) && slices.Equal(unsub, []string{"c0"})
				})
			}
			c.WatchChanges(EndpointType, []string{"c1", "c3"}, []string{"c1"})
			eventually(t, "EDS c1 c2 c3", func() bool { return slices.Equal(s.get(EndpointType), []string{"c1", "c2", "c3"}) })
			if delta {
				eventually(t, "the request of the change", func() bool {
					sub, unsub := lastRequest()
					return slices.Equal(sub, []string{"c3"}) && len(unsub) == 0
				})
			}
			// The whole set through Watch, then a removal while the server is away.
			c.Watch(EndpointType, []string{"c1", "c2"})
			eventually(t, "EDS c1 c2", func() bool { return slices.Equal(s.get(EndpointType), []string{"c1", "c2"}) })
			g.Stop()
			c.WatchChanges(EndpointType, nil, []string{"c1"})
			ln, err = net.Listen("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			g = grpc.NewServer()
			discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, server.NewServer(context.Background(), snapCache, cb))
			go g.Serve(ln)
			eventually(t, "EDS c2 after the reconnect", func() bool { return slices.Equal(s.get(EndpointType), []string{"c2"}) })
		})
	}
}

// TestUndecodedTypesArriveAsSent: resources of an Undecoded type reach the
// Updater as the server encoded them (state of the world and delta), named
// as in their field 1, every time they are sent.
func TestUndecodedTypesArriveAsSent(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(fmt.Sprintf("delta=%v", delta), func(t *testing.T) {
			snapCache := cache.NewSnapshotCache(false, cache.IDHash{}, nil)
			rc := func(version, domain string) {
				t.Helper()
				snap, err := cache.NewSnapshot(version, map[resource.Type][]types.Resource{
					resource.ListenerType: {&listenerv3.Listener{Name: "l"}},
					resource.RouteType:    {&routev3.RouteConfiguration{Name: "r", VirtualHosts: []*routev3.VirtualHost{{Name: "v", Domains: []string{domain}}}}},
				})
				if err != nil {
					t.Fatal(err)
				}
				if err := snapCache.SetSnapshot(context.Background(), nodeID, snap); err != nil {
					t.Fatal(err)
				}
			}
			rc("v1", "a.example")
			srv := startServer(t, snapCache, "127.0.0.1:0")
			conn, err := grpc.NewClient(srv.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			var mu sync.Mutex
			var got []string // domain of each RDS resource handed on
			u := UpdaterFunc(func(typeURL string, changed map[string]proto.Message, _ []string) error {
				if typeURL != RouteType {
					return nil
				}
				for name, m := range changed {
					a, ok := m.(*anypb.Any)
					if !ok || name != "r" {
						return fmt.Errorf("resource %q handed as %T", name, m)
					}
					var r routev3.RouteConfiguration
					if err := a.UnmarshalTo(&r); err != nil {
						return err
					}
					mu.Lock()
					got = append(got, r.GetVirtualHosts()[0].GetDomains()[0])
					mu.Unlock()
				}
				return nil
			})
			c := NewUpdating(conn, u, Options{Node: &corev3.Node{Id: nodeID}, Delta: delta, Undecoded: []string{RouteType},
				MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}, testr.New(t))
			c.Watch(RouteType, []string{"r"})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { c.Run(ctx); close(done) }()
			t.Cleanup(func() { cancel(); <-done })
			handed := func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(got) }
			eventually(t, "v1 handed on", func() bool { return slices.Equal(handed(), []string{"a.example"}) })
			rc("v2", "b.example")
			eventually(t, "v2 handed on", func() bool { return slices.Equal(handed(), []string{"a.example", "b.example"}) })
			if n := c.LastNACK(); n != nil {
				t.Errorf("NACK %+v", n)
			}
		})
	}
}

func TestWireName(t *testing.T) {
	b, err := proto.Marshal(&routev3.RouteConfiguration{Name: "http", VirtualHosts: []*routev3.VirtualHost{{Name: "v", Domains: []string{"a"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if name, err := wireName(b); err != nil || name != "http" {
		t.Errorf("wireName = %q, %v; want http", name, err)
	}
	if _, err := wireName(b[:len(b)-1]); err == nil {
		t.Error("a truncated resource has a name")
	}
	if _, err := wireName(nil); err == nil {
		t.Error("an empty resource has a name")
	}
}
