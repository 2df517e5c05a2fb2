package serving

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	loadstatsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/fleetlb/fleetlb/internal/proxy/lrs"
)

// stubSource is a proxy's cluster manager that sent one request to
// cluster east of a global backend since the last call.
type stubSource struct{ backend string }

func (s stubSource) LoadStats(_ []string, all bool, interval time.Duration) []*endpointv3.ClusterStats {
	if !all || interval == 0 {
		return nil
	}
	return report(s.backend, map[string]uint64{"east": 1})
}

func serve(t *testing.T, s *Server) *grpc.ClientConn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	s.Register(g)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestProxyReportsReachLoads: fleetlb-proxy's LRS client, over real gRPC,
// is asked for every cluster at the server's interval, and its reports of a
// global backend become that backend's share; other clusters are dropped.
func TestProxyReportsReachLoads(t *testing.T) {
	loads := NewLoads()
	changed := make(chan []string, 10)
	loads.OnChange = func(b []string) { changed <- b }
	conn := serve(t, &Server{Loads: loads, Insecure: true, Interval: 50 * time.Millisecond, Log: logr.Discard()})
	backend := "global/group:shop/web/10.9.0.1/tcp/80"
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		_ = lrs.New(conn, &corev3.Node{Id: "p1", Cluster: "fleet-a"}, stubSource{backend: backend}, lrs.Options{MinInterval: 10 * time.Millisecond}, logr.Discard()).Run(ctx)
	})
	defer func() { cancel(); wg.Wait() }()
	select {
	case b := <-changed:
		if len(b) != 1 || b[0] != backend {
			t.Fatalf("changed %v, want [%s]", b, backend)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no report reached the aggregate")
	}
	s, ok := loads.Share("global/group:shop/web/")
	if !ok || s.Fleet != "fleet-a" || !s.Serving()["east"] || len(s.Serving()) != 1 {
		t.Fatalf("share %+v (found %v), want east serving in fleet-a", s, ok)
	}
}

// TestLoadReportsNeedAFleetCertificate: on a secure server a stream without
// a verified client certificate is refused before anything is recorded.
func TestLoadReportsNeedAFleetCertificate(t *testing.T) {
	loads := NewLoads()
	conn := serve(t, &Server{Loads: loads, Log: logr.Discard()})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := loadstatsv3.NewLoadReportingServiceClient(conn).StreamLoadStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Send(&loadstatsv3.LoadStatsRequest{Node: &corev3.Node{Id: "p1", Cluster: "fleet-a"},
		ClusterStats: report("global/group:shop/web/10.9.0.1/tcp/80", map[string]uint64{"east": 1})})
	if _, err := st.Recv(); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("stream without a client certificate: %v, want Unauthenticated", err)
	}
	if _, ok := loads.Share(GlobalPrefix); ok {
		t.Fatal("a refused stream's report was recorded")
	}
}

// TestIdleWindowKeepsServing: a window without traffic on a backend keeps
// its serving clusters; only traffic elsewhere moves them.
func TestIdleWindowKeepsServing(t *testing.T) {
	loads := NewLoads()
	var calls int
	loads.OnChange = func([]string) { calls++ }
	b := "global/web.example.com/r1"
	loads.Record("f", 1, report(b, map[string]uint64{"east": 5}))
	loads.Record("f", 1, nil)
	loads.Record("f", 2, report(b, map[string]uint64{"east": 0}))
	if s, _ := loads.Share(GlobalPrefix + "web.example.com/"); !s.Serving()["east"] || calls != 1 {
		t.Fatalf("after idle windows: serving %v, %d changes; want east and 1", s.Serving(), calls)
	}
	loads.Record("f", 2, report(b, map[string]uint64{"west": 5}))
	if s, _ := loads.Share(GlobalPrefix + "web.example.com/"); s.Serving()["east"] || !s.Serving()["west"] || calls != 2 {
		t.Fatalf("after traffic to west: serving %v, %d changes; want west only and 2", s.Serving(), calls)
	}
	loads.Record("f", 3, report("tenant-a/ns/plain", map[string]uint64{"east": 5}))
	if _, ok := loads.Share("tenant-a/"); ok {
		t.Fatal("a backend that is not global was kept")
	}
}
