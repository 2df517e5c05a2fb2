package proxy_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime/pprof"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/fleetlb/fleetlb/envoy/translate"
	"github.com/fleetlb/fleetlb/internal/model"
	"github.com/fleetlb/fleetlb/internal/proxy"
	"github.com/fleetlb/fleetlb/internal/proxy/l7"
	"github.com/fleetlb/fleetlb/internal/proxy/upstream"
	"github.com/fleetlb/fleetlb/internal/proxy/xdsclient"
	"github.com/fleetlb/fleetlb/internal/xdstransport"
)

var (
	changeObjects    = flag.Int("proxy-change-objects", 10000, "BenchmarkOneChange: LoadBalancers and Routes (each) in the fleet")
	changeCPUProfile = flag.String("proxy-change-cpuprofile", "", "BenchmarkOneChange: write each case's CPU profile, over its changes only, to this path with .<case> appended")
)

// changeFleet is memFleet with the Routes' rules under /app (so a probe of
// another path is answered 404 at once until the change that adds it is
// served) and a long health-check interval (so 40 000 hosts' checks do not
// load the machine while changes are timed).
func changeFleet(n int, ep netip.AddrPort) *model.Fleet {
	f := memFleet(n, []netip.AddrPort{ep})
	for i := range f.VirtualHosts {
		f.VirtualHosts[i].Routes[0].Match.Path = "/app"
	}
	for i := range f.Backends {
		f.Backends[i].HealthCheck.Interval = model.Duration(5 * time.Minute)
	}
	return f
}

// BenchmarkOneChange is one configuration change at bench-scale's size
// reaching fleetlb-proxy and being served: go-control-plane's delta ADS
// server (a LinearCache per type, which pushes only what changed) on
// loopback feeds the real proxy (xdsclient, core, upstream.Manager, l7.Set)
// the translated fleet of n LoadBalancers and n Routes; each op then
//
//   - route: adds a rule to one virtual host of the shared route
//     configuration (the server re-sends it whole, as the manager does) and
//     waits until a request for the new path on the HTTP listener is answered
//     by it;
//   - lb: moves one LoadBalancer to another port (a new listener and a new
//     cluster with its load assignment replace the old ones) and waits until
//     a connection to the new port is accepted.
//
// The server is handed the route configuration with its virtual hosts
// already encoded (what it would marshal), so its side of an op is a copy and
// a hash, not a marshal of megabytes; what remains of it in ns/op is
// go-control-plane's per-push bookkeeping. Run with a fixed count:
//
//	go test ./internal/proxy -run xxx -bench BenchmarkOneChange -benchtime 50x [-proxy-change-objects 10000] [-proxy-change-cpuprofile /tmp/change.cpu]
func BenchmarkOneChange(b *testing.B) {
	n := *changeObjects
	ep := acceptAndClose(b, "127.0.0.1:0")
	fleet := changeFleet(n, ep)
	out, err := translate.Translate(fleet)
	if err != nil {
		b.Fatal(err)
	}

	// The server: one LinearCache per type behind go-control-plane's ADS server.
	caches := map[string]*cache.LinearCache{}
	initial := map[string][]types.Resource{
		xdsclient.ListenerType: out.Listeners, xdsclient.ClusterType: out.Clusters,
		xdsclient.EndpointType: out.Endpoints, xdsclient.RouteType: out.Routes, xdsclient.SecretType: out.Secrets,
	}
	for typeURL, list := range initial {
		byName := make(map[string]types.Resource, len(list))
		for _, r := range list {
			byName[cache.GetResourceName(r)] = r
		}
		caches[typeURL] = cache.NewLinearCache(typeURL, cache.WithInitialResources(byName))
	}
	// The shared route configuration as the server holds it: its virtual
	// hosts encoded, one slot each.
	var rc *routev3.RouteConfiguration
	for _, r := range out.Routes {
		if r.(*routev3.RouteConfiguration).GetName() == translate.HTTPRouteName {
			rc = r.(*routev3.RouteConfiguration)
		}
	}
	encoded := make([][]byte, len(rc.GetVirtualHosts()))
	vhostIndex := map[string]int{}
	for i, vh := range rc.GetVirtualHosts() {
		encoded[i] = encodeVirtualHost(b, vh)
		vhostIndex[vh.GetName()] = i
	}
	caches[xdsclient.RouteType].UpdateResource(rc.GetName(), routeConfigOf(rc.GetName(), encoded))

	mux := &cache.MuxCache{
		Classify:      func(r *cache.Request) string { return r.GetTypeUrl() },
		ClassifyDelta: func(r *cache.DeltaRequest) string { return r.GetTypeUrl() },
		Caches:        map[string]cache.Cache{},
	}
	for t, c := range caches {
		mux.Caches[t] = c
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g := grpc.NewServer(grpc.MaxRecvMsgSize(xdstransport.MaxMessageBytes), grpc.MaxSendMsgSize(xdstransport.MaxMessageBytes))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, server.NewServer(ctx, mux, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go g.Serve(ln)
	defer g.Stop()
	conn, err := grpc.NewClient(ln.Addr().String(), xdstransport.DialOptions(nil)...)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()

	// The proxy, as cmd/fleetlb-proxy wires it.
	m := upstream.NewManager(logr.Discard())
	defer m.Close()
	p, err := proxy.New(conn, proxy.Options{
		Node: &corev3.Node{Id: "bench-proxy", Cluster: "bench"}, Delta: true,
		Clusters: m, ValidateCluster: upstream.ValidateCluster, ValidateLoadAssignment: upstream.ValidateLoadAssignment,
		HTTP: l7.NewSet(m), DrainTimeout: time.Second,
	}, logr.Discard())
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()
	want := []string{xdsclient.ListenerType, xdsclient.ClusterType, xdsclient.EndpointType, xdsclient.RouteType}
	deadline := time.Now().Add(10 * time.Minute)
	for !allTypesAcked(p.AckedVersions(), want) {
		if nack := p.LastNACK(); nack != nil {
			b.Fatalf("NACK: %s", nack.Detail)
		}
		if time.Now().After(deadline) {
			b.Fatalf("not all types ACKed after 10 minutes: %v", p.AckedVersions())
		}
		time.Sleep(20 * time.Millisecond)
	}

	httpAddr := netip.AddrPortFrom(fleet.HTTP.VIP, fleet.HTTP.Port).String()
	client := &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 1}, Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()

	b.Run("route", func(b *testing.B) {
		gen := 0
		profile(b, "route", func() {
			for range b.N {
				b.StopTimer()
				gen++
				i := gen % n
				vh := fleet.VirtualHosts[i]
				vh.Routes = append([]model.Route{{Name: "gen", Match: model.Match{PathType: model.PathExact, Path: fmt.Sprint("/gen-", gen)},
					Respond: &model.Respond{Status: http.StatusNoContent}}}, vh.Routes...)
				mini := &model.Fleet{Name: fleet.Name, HTTP: fleet.HTTP, VirtualHosts: []model.VirtualHost{vh},
					Backends: []model.Backend{*backendOf(fleet, vh.Routes[1].Forward.Backends[0].Backend)}}
				mo, err := translate.Translate(mini)
				if err != nil {
					b.Fatal(err)
				}
				nv := mo.Routes[0].(*routev3.RouteConfiguration).GetVirtualHosts()[0]
				encoded[vhostIndex[nv.GetName()]] = encodeVirtualHost(b, nv)
				next := routeConfigOf(rc.GetName(), encoded)
				req, _ := http.NewRequest(http.MethodGet, "http://"+httpAddr+fmt.Sprint("/gen-", gen), nil)
				req.Host = vh.Hostnames[0]
				b.StartTimer()

				if err := caches[xdsclient.RouteType].UpdateResource(rc.GetName(), next); err != nil {
					b.Fatal(err)
				}
				waitFor(b, p, func() bool {
					resp, err := client.Do(req)
					if err != nil {
						return false
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					return resp.StatusCode == http.StatusNoContent
				})
			}
		})
	})

	b.Run("lb", func(b *testing.B) {
		gen := 0
		profile(b, "lb", func() {
			for range b.N {
				b.StopTimer()
				gen++
				i := gen % n
				s := &fleet.L4[i]
				be := backendOf(fleet, s.Backend)
				oldMini, err := translate.Translate(&model.Fleet{Name: fleet.Name, L4: []model.L4Service{*s}, Backends: []model.Backend{*be}})
				if err != nil {
					b.Fatal(err)
				}
				port := s.Port + 1
				if port > 39090 {
					port = 39080
				}
				nb := *be
				nb.Name = fmt.Sprintf("%s/%s/%s/%d", s.Ref.Tenant, s.Ref.Namespace, s.Ref.Name, port)
				s.Port, s.Backend = port, nb.Name
				*be = nb
				newMini, err := translate.Translate(&model.Fleet{Name: fleet.Name, L4: []model.L4Service{*s}, Backends: []model.Backend{nb}})
				if err != nil {
					b.Fatal(err)
				}
				addr := netip.AddrPortFrom(s.VIP, port).String()
				b.StartTimer()

				// Clusters and endpoints first, then the listener that uses them.
				for _, step := range []struct {
					typeURL       string
					added, before []types.Resource
				}{
					{xdsclient.ClusterType, newMini.Clusters, oldMini.Clusters},
					{xdsclient.EndpointType, newMini.Endpoints, oldMini.Endpoints},
					{xdsclient.ListenerType, newMini.Listeners, oldMini.Listeners},
				} {
					if err := caches[step.typeURL].UpdateResources(byName(step.added), namesOf(step.before)); err != nil {
						b.Fatal(err)
					}
				}
				waitFor(b, p, func() bool {
					c, err := net.DialTimeout("tcp", addr, time.Second)
					if err != nil {
						return false
					}
					c.Close()
					return true
				})
			}
		})
	})
}

// profile runs the case's changes under a CPU profile when one is asked for.
func profile(b *testing.B, name string, run func()) {
	if *changeCPUProfile == "" {
		run()
		return
	}
	f, err := os.Create(*changeCPUProfile + "." + name)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	defer pprof.StopCPUProfile()
	run()
}

// waitFor polls served every half millisecond until it holds (at most 30 s).
func waitFor(b *testing.B, p *proxy.Proxy, served func() bool) {
	deadline := time.Now().Add(30 * time.Second)
	for !served() {
		if nack := p.LastNACK(); nack != nil {
			b.Fatalf("NACK: %s", nack.Detail)
		}
		if time.Now().After(deadline) {
			b.Fatal("the change was not served within 30 s")
		}
		time.Sleep(500 * time.Microsecond)
	}
}

func backendOf(f *model.Fleet, name string) *model.Backend {
	for i := range f.Backends {
		if f.Backends[i].Name == name {
			return &f.Backends[i]
		}
	}
	panic("no backend " + name)
}

func byName(list []types.Resource) map[string]types.Resource {
	out := make(map[string]types.Resource, len(list))
	for _, r := range list {
		out[cache.GetResourceName(r)] = r
	}
	return out
}

func namesOf(list []types.Resource) []string {
	var out []string
	for _, r := range list {
		out = append(out, cache.GetResourceName(r))
	}
	return out
}

func allTypesAcked(acked map[string]string, types []string) bool {
	for _, t := range types {
		if _, ok := acked[t]; !ok {
			return false
		}
	}
	return true
}

// encodeVirtualHost is a virtual host as a RouteConfiguration's field 2 on the wire.
func encodeVirtualHost(b *testing.B, vh *routev3.VirtualHost) []byte {
	body, err := proto.MarshalOptions{Deterministic: true}.Marshal(vh)
	if err != nil {
		b.Fatal(err)
	}
	out := protowire.AppendTag(nil, 2, protowire.BytesType)
	return protowire.AppendBytes(out, body)
}

// routeConfigOf is a route configuration whose virtual hosts are already
// encoded: they travel as its unknown fields, which marshal as a copy and
// decode on the proxy as the virtual_hosts they are.
func routeConfigOf(name string, encoded [][]byte) *routev3.RouteConfiguration {
	size := 0
	for _, e := range encoded {
		size += len(e)
	}
	raw := make([]byte, 0, size)
	for _, e := range encoded {
		raw = append(raw, e...)
	}
	rc := &routev3.RouteConfiguration{Name: name}
	rc.ProtoReflect().SetUnknown(protoreflect.RawFields(raw))
	return rc
}
