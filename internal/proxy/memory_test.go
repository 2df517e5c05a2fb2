package proxy_test

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"

	"github.com/fleetlb/fleetlb/envoy/translate"
	"github.com/fleetlb/fleetlb/internal/model"
	"github.com/fleetlb/fleetlb/internal/proxy"
	"github.com/fleetlb/fleetlb/internal/proxy/l7"
	"github.com/fleetlb/fleetlb/internal/proxy/upstream"
	"github.com/fleetlb/fleetlb/internal/proxy/xdsclient"
	"github.com/fleetlb/fleetlb/internal/xdstransport"
)

var (
	memHeapProfile = flag.String("proxy-mem-heapprofile", "", "BenchmarkMemoryPerResource: write the heap profile here while the proxy holds the configuration (-memprofile is written after the proxy is gone)")
	memObjects     = flag.Int("proxy-mem-objects", 2000, "BenchmarkMemoryPerResource: LoadBalancers and Routes (each) in the fleet")
)

// memFleet is the fleet of e2e/bench-scale: n LoadBalancers (one TCP port,
// TCP health check, one node per tenant… here nodes) and n Routes (one
// hostname, one PathPrefix "/" rule to its own backend) on the shared HTTP
// listener, with the health checks the manager sets on every backend.
// Endpoints are the given addresses (the same port for all, where the
// benchmark accepts, so hosts are healthy as in a working fleet).
func memFleet(n int, endpoints []netip.AddrPort) *model.Fleet {
	eps := make([]model.Endpoint, len(endpoints))
	for i, e := range endpoints {
		eps[i] = model.Endpoint{Address: e.Addr(), Port: e.Port()}
	}
	vip := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{127, 77, byte(i >> 8), byte(i)}) }
	f := &model.Fleet{Name: "bench", HTTP: &model.SharedListener{VIP: netip.AddrFrom4([4]byte{127, 78, 0, 1}), Port: 39080}}
	for i := range n {
		tenant := fmt.Sprint("tenant-", i%5)
		lb := fmt.Sprintf("%s/tenant-%s/lb-%05d/tcp", tenant, tenant, i)
		f.L4 = append(f.L4, model.L4Service{Ref: model.Ref{Tenant: tenant, Namespace: "tenant-" + tenant, Name: fmt.Sprintf("lb-%05d", i)},
			VIP: vip(i + 1), Port: 39080, Protocol: model.TCP, Backend: lb})
		f.Backends = append(f.Backends, model.Backend{Name: lb, Protocol: model.BackendTCP, HealthCheck: &model.HealthCheck{Type: model.HealthTCP},
			Groups: []model.EndpointGroup{{Cluster: "bench", Endpoints: eps}}})
		rt := fmt.Sprintf("%s/tenant-%s/rt-%05d/web/80", tenant, tenant, i)
		host := fmt.Sprintf("r%05d.%s.example.com", i, tenant)
		f.VirtualHosts = append(f.VirtualHosts, model.VirtualHost{Name: host, Hostnames: []string{host}, Routes: []model.Route{{
			Name: "rule-0", Match: model.Match{PathType: model.PathPrefix, Path: "/"},
			Forward: &model.Forward{Backends: []model.WeightedBackend{{Backend: rt, Weight: 1}}}}}})
		f.Backends = append(f.Backends, model.Backend{Name: rt, Protocol: model.BackendHTTP1, HealthCheck: &model.HealthCheck{Type: model.HealthTCP},
			Groups: []model.EndpointGroup{{Cluster: "bench", Endpoints: eps}}})
	}
	return f
}

// memSample is the process's memory after a full collection.
type memSample struct {
	heap, stack, rss uint64
	goroutines       int
}

func sampleMemory(tb testing.TB) memSample {
	runtime.GC()
	debug.FreeOSMemory() // returns freed pages, so RSS follows what is live
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{heap: ms.HeapAlloc, stack: ms.StackInuse, rss: vmRSS(tb), goroutines: runtime.NumGoroutine()}
}

func vmRSS(tb testing.TB) uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return kb << 10
		}
	}
	tb.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// acceptAndClose accepts on addr until the benchmark ends, closing every
// connection (what a TCP health check needs to pass).
func acceptAndClose(b *testing.B, addr string) netip.AddrPort {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// BenchmarkMemoryPerResource measures what fleetlb-proxy keeps per xDS
// resource: the real data plane of cmd/fleetlb-proxy (xdsclient, proxy core,
// upstream.Manager with its health checks, l7.Set) takes the translated
// bench-scale fleet over delta ADS from go-control-plane's server; every L4
// listener binds its own socket on 127.77.x.y as in production. Memory is read
// after a full GC before the proxy starts (the server already holds the
// snapshot) and once every type is ACKed; the difference includes the server's
// per-stream state for this one stream. Run with -benchtime 1x:
//
//	go test ./internal/proxy -run xxx -bench BenchmarkMemoryPerResource -benchtime 1x [-proxy-mem-objects 2000] [-proxy-mem-heapprofile heap.out]
//
// Resources count as xDS names: each listener, cluster, load assignment and
// route configuration, plus each virtual host inside the route configuration
// (6 per LoadBalancer + Route pair).
func BenchmarkMemoryPerResource(b *testing.B) {
	n := *memObjects
	if *memHeapProfile != "" {
		runtime.MemProfileRate = 512 // fine-grained: objects are small and many
	}
	for _, nodes := range []int{1, 3} {
		b.Run(fmt.Sprintf("objects=%d/nodes=%d", 2*n, nodes), func(b *testing.B) {
			var eps []netip.AddrPort
			for i := range nodes {
				eps = append(eps, acceptAndClose(b, fmt.Sprintf("127.0.0.%d:0", i+1)))
			}
			out, err := translate.Translate(memFleet(n, eps))
			if err != nil {
				b.Fatal(err)
			}
			resources := len(out.Listeners) + len(out.Clusters) + len(out.Endpoints) + len(out.Routes) + len(out.Secrets) + n
			snap, err := cache.NewSnapshot("v1", out.ByType())
			if err != nil {
				b.Fatal(err)
			}
			for range b.N {
				measureProxyMemory(b, snap, resources, nodes*2*n)
			}
		})
	}
}

func measureProxyMemory(b *testing.B, snap *cache.Snapshot, resources, hosts int) {
	b.StopTimer()
	const node = "bench-proxy"
	snapCache := cache.NewSnapshotCache(true, cache.IDHash{}, nil)
	if err := snapCache.SetSnapshot(context.Background(), node, snap); err != nil {
		b.Fatal(err)
	}
	if err := snap.ConstructVersionMap(); err != nil {
		b.Fatal(err)
	}
	g := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, server.NewServer(context.Background(), snapCache, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go g.Serve(ln)
	defer g.Stop()
	conn, err := grpc.NewClient(ln.Addr().String(), xdstransport.DialOptions(nil)...) // fleetlb-proxy's (message size)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()

	before := sampleMemory(b)
	b.StartTimer()
	m := upstream.NewManager(logr.Discard())
	defer m.Close()
	p, err := proxy.New(conn, proxy.Options{
		Node: &corev3.Node{Id: node, Cluster: "bench"}, Delta: true,
		Clusters: m, ValidateCluster: upstream.ValidateCluster, ValidateLoadAssignment: upstream.ValidateLoadAssignment,
		HTTP: l7.NewSet(m), DrainTimeout: time.Second,
	}, logr.Discard())
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()
	// Every type ACKed at v1; bounded by the benchmark's deadline.
	want := []string{xdsclient.ListenerType, xdsclient.ClusterType, xdsclient.EndpointType, xdsclient.RouteType}
	deadline := time.Now().Add(5 * time.Minute)
	for !allAcked(p.AckedVersions(), want, "v1") {
		if nack := p.LastNACK(); nack != nil {
			b.Fatalf("NACK: %s", nack.Detail)
		}
		if time.Now().After(deadline) {
			b.Fatalf("not all types ACKed after 5 minutes: %v (last NACK %+v)", p.AckedVersions(), p.LastNACK())
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.StopTimer()
	// Let first health checks settle (hosts turn healthy), as in a running fleet.
	time.Sleep(2 * time.Second)
	after := sampleMemory(b)
	if *memHeapProfile != "" {
		f, err := os.Create(*memHeapProfile)
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.WriteHeapProfile(f); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(resources) }
	b.ReportMetric(float64(resources), "resources")
	b.ReportMetric(per(after.heap+after.stack, before.heap+before.stack), "heap+stack-B/resource")
	b.ReportMetric(per(after.heap, before.heap), "heap-B/resource")
	b.ReportMetric(per(after.stack, before.stack), "stack-B/resource")
	b.ReportMetric(per(after.rss, before.rss), "rss-B/resource")
	b.ReportMetric(float64(after.goroutines-before.goroutines), "goroutines")
	b.ReportMetric(float64(hosts), "hosts")
}

func allAcked(acked map[string]string, types []string, version string) bool {
	for _, t := range types {
		if acked[t] != version {
			return false
		}
	}
	return true
}
