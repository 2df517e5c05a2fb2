package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/fleetlb/fleetlb/internal/xdstransport"
)

const fleet = "default"

type harness struct {
	srv  *Server
	conn *grpc.ClientConn // a proxy of fleet "default" over mTLS
	addr string
	pki  *testPKI
}

// start serves xDS over mTLS on loopback, with real certificates, and dials
// it with a client certificate of the fleet "default".
func start(t *testing.T) *harness { return startWith(t, Options{}) }

func startWith(t testing.TB, opts Options) *harness {
	t.Helper()
	p := newPKI(t)
	if opts.Debounce == 0 {
		opts.Debounce, opts.MaxDelay = 20*time.Millisecond, 200*time.Millisecond
	}
	if opts.Log.GetSink() == nil {
		opts.Log = testr.NewWithInterface(t, testr.Options{})
	}
	srv := New(opts)
	var creds credentials.TransportCredentials
	if !opts.Insecure {
		creds = credentials.NewTLS(xdstransport.ServerTLS(p.current))
	}
	g := grpc.NewServer(xdstransport.ServerOptions(creds)...)
	srv.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Run(ctx); close(done) }()
	h := &harness{srv: srv, addr: ln.Addr().String(), pki: p}
	if opts.Insecure {
		h.conn = h.dial(t, nil)
	} else {
		h.conn = h.dial(t, p.clientTLS(t, fleet))
	}
	t.Cleanup(func() {
		g.Stop()
		cancel()
		<-done
	})
	return h
}

// dial connects to the server with cfg (nil: plaintext).
func (h *harness) dial(t testing.TB, cfg *tls.Config) *grpc.ClientConn {
	t.Helper()
	var creds credentials.TransportCredentials
	if cfg != nil {
		creds = credentials.NewTLS(cfg)
	}
	conn, err := grpc.NewClient(h.addr, xdstransport.DialOptions(creds)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func clusters(n int, timeout time.Duration) map[resource.Type][]types.Resource {
	var cs []types.Resource
	for i := range n {
		cs = append(cs, &clusterv3.Cluster{
			Name:                 fmt.Sprintf("c%02d", i),
			ConnectTimeout:       durationpb.New(timeout),
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		})
	}
	return map[resource.Type][]types.Resource{resource.ClusterType: cs}
}

func node(id string) *corev3.Node { return &corev3.Node{Id: id, Cluster: fleet} }

// waitAcked waits (bounded) until the fleet acknowledged at least gen.
func waitAcked(t *testing.T, s *Server, gen uint64) {
	t.Helper()
	ch := make(chan struct{}, 1)
	s.OnAcked(func(f string, g uint64) {
		if f == fleet && g >= gen {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	})
	if s.AckedGeneration(fleet) >= gen {
		return
	}
	select {
	case <-ch:
	case <-time.After(20 * time.Second):
		t.Fatalf("fleet never acknowledged generation %d (acked %d)", gen, s.AckedGeneration(fleet))
	}
}

type sotwClient struct {
	t      *testing.T
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
}

func sotw(t *testing.T, h *harness, id string) *sotwClient {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(h.conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &sotwClient{t: t, stream: st}
	c.send(&discoveryv3.DiscoveryRequest{Node: node(id), TypeUrl: resource.ClusterType})
	return c
}

func (c *sotwClient) send(r *discoveryv3.DiscoveryRequest) {
	if err := c.stream.Send(r); err != nil {
		c.t.Fatal(err)
	}
}

func (c *sotwClient) recv() *discoveryv3.DiscoveryResponse {
	c.t.Helper()
	type res struct {
		r   *discoveryv3.DiscoveryResponse
		err error
	}
	ch := make(chan res, 1)
	go func() { r, err := c.stream.Recv(); ch <- res{r, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			c.t.Fatal(r.err)
		}
		return r.r
	case <-time.After(20 * time.Second):
		c.t.Fatal("no xDS response")
		return nil
	}
}

func (c *sotwClient) ack(r *discoveryv3.DiscoveryResponse) {
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce})
}

func TestSotWServesAndTracksAcks(t *testing.T) {
	h := start(t)
	gen := h.srv.Set(fleet, clusters(3, time.Second))
	c := sotw(t, h, "p1")
	r := c.recv()
	if len(r.Resources) != 3 {
		t.Fatalf("got %d clusters, want 3", len(r.Resources))
	}
	if h.srv.AckedGeneration(fleet) != 0 {
		t.Fatal("generation counted as acknowledged before the proxy ACKed")
	}
	c.ack(r)
	waitAcked(t, h.srv, gen)
	if n := h.srv.ConnectedProxies(fleet); n != 1 {
		t.Fatalf("connected proxies %d", n)
	}

	// A second proxy that has not ACKed holds the fleet's generation back.
	gen2 := h.srv.Set(fleet, clusters(4, time.Second))
	r = c.recv()
	c.ack(r)
	c2 := sotw(t, h, "p2")
	r2 := c2.recv()
	if len(r2.Resources) != 4 {
		t.Fatalf("new proxy got %d clusters, want the current 4", len(r2.Resources))
	}
	c2.ack(r2)
	waitAcked(t, h.srv, gen2)
}

func TestCoalescesBurstIntoOneSnapshot(t *testing.T) {
	h := start(t)
	var last uint64
	for i := range 10 {
		last = h.srv.Set(fleet, clusters(1, time.Duration(i+1)*time.Second))
	}
	// Connect once the burst is served: a proxy connected before would first
	// get the lone first Set's snapshot.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(time.Millisecond) {
		if _, g := h.srv.Version(fleet); g >= last {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the burst was not applied (serving generation %d)", g)
		}
	}
	c := sotw(t, h, "p1")
	r := c.recv()
	c.ack(r)
	waitAcked(t, h.srv, last)
	// The first Set came alone and may have been applied at once; the rest are one snapshot.
	if n := testutil.ToFloat64(h.srv.metrics.snapshots.WithLabelValues(fleet)); n > 2 {
		t.Fatalf("%v snapshots for a burst of 10 Sets, want at most 2", n)
	}
	var cl clusterv3.Cluster
	if err := r.Resources[0].UnmarshalTo(&cl); err != nil || cl.ConnectTimeout.AsDuration() != 10*time.Second {
		t.Fatalf("served %v (%v), want the last Set (10s)", cl.ConnectTimeout, err)
	}
}

// A Set after a quiet debounce is due at once; one that follows another
// closely waits for the burst to settle.
func TestLoneSetIsAppliedAtOnce(t *testing.T) {
	srv := New(Options{Log: testr.New(t), Debounce: time.Hour, MaxDelay: 2 * time.Hour})
	gen := srv.Set(fleet, clusters(1, time.Second))
	srv.flushDue(time.Now())
	if _, served := srv.Version(fleet); served != gen {
		t.Fatalf("a lone Set was not applied at once: serving generation %d, want %d", served, gen)
	}
	srv.Set(fleet, clusters(2, time.Second)) // within the debounce of the first: a burst
	third := srv.Set(fleet, clusters(3, time.Second))
	srv.flushDue(time.Now())
	if _, served := srv.Version(fleet); served != gen {
		t.Fatalf("a burst was applied before it settled: serving generation %d", served)
	}
	srv.flushDue(time.Now().Add(time.Hour))
	if _, served := srv.Version(fleet); served != third {
		t.Fatalf("after the debounce serving generation %d, want the burst's last %d", served, third)
	}
}

// Within a burst, a fleet whose apply is costly is applied at most once per
// burstApplySpacing times that cost, even past MaxDelay; a lone Set is not
// held back by it.
func TestBurstIsSpacedByTheApplyCost(t *testing.T) {
	srv := New(Options{Log: testr.New(t), Debounce: 10 * time.Millisecond, MaxDelay: 20 * time.Millisecond})
	srv.Set(fleet, clusters(1, time.Second))
	srv.flushDue(time.Now())
	t0 := time.Now()
	srv.mu.Lock()
	srv.applied[fleet] = appliedAt{end: t0, took: time.Second} // as if applying took a second
	srv.mu.Unlock()
	srv.Set(fleet, clusters(2, time.Second))
	last := srv.Set(fleet, clusters(3, time.Second)) // a burst
	if wait, ok := srv.flushDue(t0.Add(time.Second)); !ok || wait < 8*time.Second {
		t.Fatalf("a burst past its debounce and maximum delay is due in %v (%v), want about 9s: ten times the last apply", wait, ok)
	}
	if _, served := srv.Version(fleet); served == last {
		t.Fatal("the burst was applied before ten times the last apply's cost had passed")
	}
	srv.flushDue(t0.Add(burstApplySpacing*time.Second + time.Millisecond))
	if _, served := srv.Version(fleet); served != last {
		t.Fatalf("serving generation %d after the spacing, want %d", served, last)
	}

	srv.mu.Lock()
	srv.applied[fleet] = appliedAt{end: time.Now(), took: time.Second}
	srv.mu.Unlock()
	time.Sleep(20 * time.Millisecond) // quiet for longer than the debounce
	lone := srv.Set(fleet, clusters(4, time.Second))
	srv.flushDue(time.Now())
	if _, served := srv.Version(fleet); served != lone {
		t.Fatalf("a lone Set was held back by the last apply's cost: serving %d, want %d", served, lone)
	}
}

func TestIdenticalSetIsNotPushed(t *testing.T) {
	h := start(t)
	gen := h.srv.Set(fleet, clusters(2, time.Second))
	c := sotw(t, h, "p1")
	c.ack(c.recv())
	waitAcked(t, h.srv, gen)
	pushes := testutil.ToFloat64(h.srv.metrics.pushes.WithLabelValues(fleet, resource.ClusterType))

	same := h.srv.Set(fleet, clusters(2, time.Second))
	// The served snapshot already contains the new generation: it is
	// acknowledged without a new snapshot or a push.
	waitAcked(t, h.srv, same)
	if n := testutil.ToFloat64(h.srv.metrics.snapshots.WithLabelValues(fleet)); n != 1 {
		t.Fatalf("an identical Set built snapshot number %v", n)
	}
	if p := testutil.ToFloat64(h.srv.metrics.pushes.WithLabelValues(fleet, resource.ClusterType)); p != pushes {
		t.Fatalf("an identical Set was pushed (%v → %v responses)", pushes, p)
	}
	// The next real change is what arrives next on the stream.
	h.srv.Set(fleet, clusters(3, time.Second))
	if r := c.recv(); len(r.Resources) != 3 {
		t.Fatalf("next response has %d clusters, want the 3 of the real change", len(r.Resources))
	}
}

func TestNACKIsRecordedAndHoldsGeneration(t *testing.T) {
	h := start(t)
	gen := h.srv.Set(fleet, clusters(1, time.Second))
	c := sotw(t, h, "p1")
	c.ack(c.recv())
	waitAcked(t, h.srv, gen)

	bad := h.srv.Set(fleet, clusters(2, time.Second))
	r := c.recv()
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce,
		ErrorDetail: &status.Status{Code: 3, Message: `cluster "c01": lb_policy MAGLEV is not supported`}})
	deadline := time.Now().Add(20 * time.Second)
	for len(h.srv.NACKs(fleet)) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	nacks := h.srv.NACKs(fleet)
	if len(nacks) != 1 || nacks[0].Node != "p1" || nacks[0].Detail != `cluster "c01": lb_policy MAGLEV is not supported` {
		t.Fatalf("NACKs = %+v", nacks)
	}
	if testutil.ToFloat64(h.srv.metrics.nacks.WithLabelValues(fleet, resource.ClusterType)) != 1 {
		t.Fatal("NACK not counted")
	}
	if g := h.srv.AckedGeneration(fleet); g >= bad {
		t.Fatalf("a NACKed generation %d counted as acknowledged", g)
	}
}

func TestInvalidResourceIsRefused(t *testing.T) {
	h := start(t)
	gen := h.srv.Set(fleet, clusters(1, time.Second))
	c := sotw(t, h, "p1")
	c.ack(c.recv())
	waitAcked(t, h.srv, gen)
	version, _ := h.srv.Version(fleet)

	invalid := clusters(1, time.Second)
	invalid[resource.ClusterType] = append(invalid[resource.ClusterType], &clusterv3.Cluster{Name: "bad", ConnectTimeout: durationpb.New(-time.Second)})
	h.srv.Set(fleet, invalid)
	deadline := time.Now().Add(20 * time.Second)
	for h.srv.LastError(fleet) == nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := h.srv.LastError(fleet); err == nil {
		t.Fatal("an invalid cluster was accepted")
	}
	if v, _ := h.srv.Version(fleet); v != version {
		t.Fatalf("served version changed from %s to %s after a refused Set", version, v)
	}
	if testutil.ToFloat64(h.srv.metrics.rejects.WithLabelValues(fleet)) != 1 {
		t.Fatal("reject not counted")
	}
}

func TestReconnectGetsCurrentSnapshot(t *testing.T) {
	h := start(t)
	h.srv.Set(fleet, clusters(1, time.Second))
	c := sotw(t, h, "p1")
	c.ack(c.recv())
	if err := c.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	gen := h.srv.Set(fleet, clusters(5, time.Second))
	deadline := time.Now().Add(20 * time.Second)
	for _, g := h.srv.Version(fleet); g < gen && time.Now().Before(deadline); _, g = h.srv.Version(fleet) {
		time.Sleep(5 * time.Millisecond)
	}
	c2 := sotw(t, h, "p1")
	r := c2.recv()
	if len(r.Resources) != 5 {
		t.Fatalf("reconnected proxy got %d clusters, want the current 5", len(r.Resources))
	}
	c2.ack(r)
	waitAcked(t, h.srv, gen)
}

func TestDeltaSendsOnlyChangedResources(t *testing.T) {
	h := start(t)
	gen := h.srv.Set(fleet, clusters(10, time.Second))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(h.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	recv := func() *discoveryv3.DeltaDiscoveryResponse {
		ch := make(chan *discoveryv3.DeltaDiscoveryResponse, 1)
		go func() {
			r, err := st.Recv()
			if err != nil {
				t.Error(err)
			}
			ch <- r
		}()
		select {
		case r := <-ch:
			return r
		case <-time.After(20 * time.Second):
			t.Fatal("no delta response")
			return nil
		}
	}
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node("d1"), TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	r := recv()
	if len(r.Resources) != 10 {
		t.Fatalf("initial delta response has %d resources, want 10", len(r.Resources))
	}
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: r.Nonce}); err != nil {
		t.Fatal(err)
	}
	waitAcked(t, h.srv, gen)

	changed := clusters(10, time.Second)
	changed[resource.ClusterType][7].(*clusterv3.Cluster).ConnectTimeout = durationpb.New(3 * time.Second)
	gen2 := h.srv.Set(fleet, changed)
	r = recv()
	if len(r.Resources) != 1 || r.Resources[0].Name != "c07" || len(r.RemovedResources) != 0 {
		t.Fatalf("delta after one change carried %d resources (%v), want only c07", len(r.Resources), r.Resources)
	}
	if h.srv.AckedGeneration(fleet) >= gen2 {
		t.Fatal("delta change counted as acknowledged before the ACK")
	}
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: r.Nonce}); err != nil {
		t.Fatal(err)
	}
	waitAcked(t, h.srv, gen2)
}

func TestProxiesChangedOnConnectAndDisconnect(t *testing.T) {
	h := start(t)
	events := make(chan string, 4)
	h.srv.OnProxiesChanged(func(f string) { events <- f })
	expect := func(what string, want int) {
		t.Helper()
		select {
		case f := <-events:
			if f != fleet || h.srv.ConnectedProxies(fleet) != want {
				t.Fatalf("%s: event for %q with %d proxies, want %q with %d", what, f, h.srv.ConnectedProxies(fleet), fleet, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no event", what)
		}
	}
	c := sotw(t, h, "p1")
	expect("connect", 1)
	if err := c.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	expect("disconnect", 0)
}
