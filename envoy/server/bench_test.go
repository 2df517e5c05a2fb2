package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/fleetlb/fleetlb/envoy/translate"
	"github.com/fleetlb/fleetlb/internal/model"
	"github.com/fleetlb/fleetlb/internal/testcerts"
	"github.com/fleetlb/fleetlb/internal/xdstransport"
)

// BenchmarkApplySnapshot10k measures building, validating, hashing and
// setting a 10k-cluster snapshot (what one coalesced Set costs the manager).
func BenchmarkApplySnapshot10k(b *testing.B) {
	s := New(Options{Log: logr.Discard()})
	a, c := clusters(10000, time.Second), clusters(10000, 2*time.Second)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		res := a
		if i%2 == 1 {
			res = c // alternate, so every apply is a real change
		}
		i++
		if err := s.apply(fleet, &pendingSet{resources: res, gen: uint64(i), first: time.Now()}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPropagationOverTheWire measures Set → every proxy ACKed for a
// 1,000-cluster snapshot through real gRPC on loopback, over mTLS and in
// plaintext: what authenticated xDS costs per configuration change.
func BenchmarkPropagationOverTheWire(b *testing.B) {
	for _, mode := range []string{"mTLS", "plaintext"} {
		b.Run(mode, func(b *testing.B) {
			h := startWith(b, Options{Insecure: mode == "plaintext", Debounce: time.Millisecond, MaxDelay: time.Millisecond, Log: logr.Discard()})
			a, c := clusters(1000, time.Second), clusters(1000, 2*time.Second)
			acked := make(chan uint64, 16)
			h.srv.OnAcked(func(_ string, g uint64) { acked <- g })
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(h.conn).StreamAggregatedResources(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node("bench"), TypeUrl: resource.ClusterType}); err != nil {
				b.Fatal(err)
			}
			i := 0
			for b.Loop() {
				res := a
				if i%2 == 1 {
					res = c
				}
				i++
				gen := h.srv.Set(fleet, res)
				r, err := st.Recv()
				if err != nil {
					b.Fatal(err)
				}
				if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce}); err != nil {
					b.Fatal(err)
				}
				for g := <-acked; g < gen; g = <-acked {
				}
			}
		})
	}
}

// BenchmarkConnectOverTheWire measures a proxy connecting: dial, (mTLS
// handshake,) open the ADS stream and receive a 100-cluster snapshot.
func BenchmarkConnectOverTheWire(b *testing.B) {
	for _, mode := range []string{"mTLS", "plaintext"} {
		b.Run(mode, func(b *testing.B) {
			h := startWith(b, Options{Insecure: mode == "plaintext", Log: logr.Discard()})
			h.srv.Set(fleet, clusters(100, time.Second))
			var cfg *tls.Config
			if mode == "mTLS" {
				cfg = h.pki.clientTLS(b, fleet)
			}
			for b.Loop() {
				var creds credentials.TransportCredentials
				if cfg != nil {
					creds = credentials.NewTLS(cfg)
				}
				conn, err := grpc.NewClient(h.addr, xdstransport.DialOptions(creds)...)
				if err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
				if err == nil {
					err = st.Send(&discoveryv3.DiscoveryRequest{Node: node("bench"), TypeUrl: resource.ClusterType})
				}
				if err == nil {
					_, err = st.Recv()
				}
				cancel()
				conn.Close()
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// scaleFleet is the model of a fleet at bench-scale's size: lbs L4
// LoadBalancers (a listener, cluster and endpoints each) and routes Routes
// (each its own hostname, virtual host of the one shared HTTP route
// configuration, and backend), a few of them on HTTPS with a certificate.
func scaleFleet(tb testing.TB, lbs, routes int) *model.Fleet {
	tb.Helper()
	addr := func(base byte, i int) netip.Addr {
		return netip.AddrFrom4([4]byte{127, base + byte(i>>16), byte(i >> 8), byte(i)})
	}
	nodes := func(tenant int) []model.EndpointGroup {
		return []model.EndpointGroup{
			{Cluster: fmt.Sprint("t", tenant), Zone: "z1", Endpoints: []model.Endpoint{{Address: addr(1, tenant<<8|1), Port: 30080}}},
			{Cluster: fmt.Sprint("t", tenant), Zone: "z2", Endpoints: []model.Endpoint{{Address: addr(1, tenant<<8|2), Port: 30080}}}}
	}
	f := &model.Fleet{Name: fleet, HTTP: &model.SharedListener{VIP: addr(60, 1), Port: 8080}, HTTPS: &model.SharedListener{VIP: addr(60, 1), Port: 8443}}
	ca, err := testcerts.NewCA()
	if err != nil {
		tb.Fatal(err)
	}
	const certs = 20
	for c := range certs {
		cert, key, _, err := ca.Issue(fmt.Sprintf("*.c%d.example.com", c))
		if err != nil {
			tb.Fatal(err)
		}
		f.Certificates = append(f.Certificates, model.Certificate{Name: fmt.Sprintf("t%d/ns/cert%d", c%5, c), CertPEM: string(cert), KeyPEM: string(key)})
	}
	for i := range lbs {
		t := i % 5
		ref := model.Ref{Tenant: fmt.Sprint("t", t), Namespace: "tenant-t" + fmt.Sprint(t), Name: fmt.Sprint("lb", i)}
		name := fmt.Sprintf("%s/%s/%s/80", ref.Tenant, ref.Namespace, ref.Name)
		f.L4 = append(f.L4, model.L4Service{Ref: ref, VIP: addr(10, i), Port: 80, Protocol: model.TCP, Backend: name})
		f.Backends = append(f.Backends, model.Backend{Name: name, Protocol: model.BackendTCP, HealthCheck: &model.HealthCheck{Type: model.HealthTCP}, Groups: nodes(t)})
	}
	for i := range routes {
		t := i % 5
		name := fmt.Sprintf("t%d/tenant-t%d/rt%d/api/80", t, t, i)
		host := fmt.Sprintf("h%d.example.com", i)
		vh := model.VirtualHost{Name: host, Hostnames: []string{host}, Routes: []model.Route{{Name: "r0",
			Match:   model.Match{PathType: model.PathPrefix, Path: "/api"},
			Forward: &model.Forward{Backends: []model.WeightedBackend{{Backend: name, Weight: 1}}}}}}
		if i%100 == 0 { // some on HTTPS
			c := (i / 100) % certs
			host = fmt.Sprintf("h%d.c%d.example.com", i, c)
			vh.Name, vh.Hostnames, vh.Certificate = host, []string{host}, f.Certificates[c].Name
		}
		f.VirtualHosts = append(f.VirtualHosts, vh)
		f.Backends = append(f.Backends, model.Backend{Name: name, Protocol: model.BackendHTTP1, HealthCheck: &model.HealthCheck{Type: model.HealthTCP}, Groups: nodes(t)})
	}
	return f
}

// deltaProxy is a delta-xDS client as fleetlb-proxy subscribes: clusters and
// listeners by wildcard, endpoints, route configurations and secrets by the
// names those name. It ACKs every response and reports each on got.
type deltaProxy struct {
	stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	got    chan *discoveryv3.DeltaDiscoveryResponse
}

func newDeltaProxy(tb testing.TB, h *harness, out *translate.Output) *deltaProxy {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(h.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	p := &deltaProxy{stream: st, got: make(chan *discoveryv3.DeltaDiscoveryResponse, 64)}
	names := func(rs []types.Resource) []string {
		var ns []string
		for _, r := range rs {
			ns = append(ns, cachev3.GetResourceName(r))
		}
		return ns
	}
	// Requests go out from their own goroutine: a client that stopped
	// reading while it sends (20 000 names) could wait forever for a server
	// that is sending it megabytes. Envoy reads and writes independently too.
	sendq := make(chan *discoveryv3.DeltaDiscoveryRequest, 1024)
	go func() {
		for r := range sendq {
			if st.Send(r) != nil {
				return
			}
		}
	}()
	for _, sub := range []struct {
		typ   string
		names []string
	}{
		{resource.ClusterType, []string{"*"}}, {resource.EndpointType, names(out.Endpoints)},
		{resource.ListenerType, []string{"*"}}, {resource.RouteType, names(out.Routes)}, {resource.SecretType, names(out.Secrets)},
	} {
		sendq <- &discoveryv3.DeltaDiscoveryRequest{Node: node("bench"), TypeUrl: sub.typ, ResourceNamesSubscribe: sub.names}
	}
	go func() {
		defer close(p.got)
		defer close(sendq)
		for {
			r, err := st.Recv()
			if err != nil {
				return
			}
			sendq <- &discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce}
			p.got <- r
		}
	}()
	return p
}

// waitPush waits (bounded) for a response of type typ, which must carry one resource.
func (p *deltaProxy) waitPush(tb testing.TB, typ string) {
	tb.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case r, ok := <-p.got:
			if !ok {
				tb.Fatal("the delta stream ended")
			}
			if r.TypeUrl != typ {
				continue
			}
			if len(r.Resources) != 1 || len(r.RemovedResources) != 0 {
				tb.Fatalf("%s pushed %d resources and removed %d, want 1 changed", typ, len(r.Resources), len(r.RemovedResources))
			}
			return
		case <-timeout:
			tb.Fatalf("no %s pushed", typ)
		}
	}
}

// BenchmarkOneChangePush measures what one changed resource in a fleet of
// bench-scale's size (10 000 L4 LoadBalancers and 10 000 Routes: ≈ 50 000
// xDS resources, one route configuration with 10 000 virtual hosts) costs
// the server from Set until a delta proxy on loopback received it and the
// fleet's acknowledged generation reached it. Iterations alternate a
// cluster change and a virtual-host change (the shared route configuration).
// The cluster and vhost variants change only one kind of resource; sotw
// alternates with a state-of-the-world proxy instead of a delta one.
func BenchmarkOneChangePush(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		for _, kind := range []string{"alternate", "cluster", "vhost", "sotw"} {
			b.Run(fmt.Sprint(n, "/", kind), func(b *testing.B) { benchOneChangePush(b, n, kind) })
		}
	}
}

func benchOneChangePush(b *testing.B, n int, kind string) {
	f := scaleFleet(b, n, n)
	out, err := translate.Translate(f)
	if err != nil {
		b.Fatal(err)
	}
	h := startWith(b, Options{Insecure: true, Debounce: time.Millisecond, MaxDelay: time.Millisecond, Log: logr.Discard()})
	acked := make(chan uint64, 1024)
	h.srv.OnAcked(func(_ string, g uint64) { acked <- g })
	waitGen := func(gen uint64) {
		timeout := time.After(time.Minute)
		for {
			select {
			case g := <-acked:
				if g >= gen {
					return
				}
			case <-timeout:
				b.Fatalf("generation %d not acknowledged (acked %d, last error %v)", gen, h.srv.AckedGeneration(fleet), h.srv.LastError(fleet))
			}
		}
	}
	gen := h.srv.Set(fleet, out.ByType())
	var p interface{ waitPush(testing.TB, string) }
	if kind == "sotw" {
		p = newSotWProxy(b, h, out)
		waitGen(gen)
	} else {
		d := newDeltaProxy(b, h, out)
		waitGen(gen)
		for len(d.got) > 0 {
			<-d.got
		}
		p = d
	}

	// The shared HTTP route configuration: the one with the most virtual hosts.
	rcAt := 0
	for i, r := range out.Routes {
		if len(r.(*routev3.RouteConfiguration).VirtualHosts) > len(out.Routes[rcAt].(*routev3.RouteConfiguration).VirtualHosts) {
			rcAt = i
		}
	}
	cur := out.ByType()
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		next := map[resource.Type][]types.Resource{}
		for t, rs := range cur {
			next[t] = rs
		}
		var want string
		if kind == "cluster" || kind != "vhost" && i%2 == 0 {
			cs := slices.Clone(cur[resource.ClusterType])
			j := (i / 2 * 7919) % len(cs)
			c := proto.Clone(cs[j]).(*clusterv3.Cluster)
			c.ConnectTimeout = durationpb.New(5*time.Second + time.Duration(i+1)*time.Millisecond) // never the value it had
			cs[j], want = c, resource.ClusterType
			next[resource.ClusterType] = cs
		} else {
			rs := slices.Clone(cur[resource.RouteType])
			rc := proto.Clone(&routev3.RouteConfiguration{Name: rs[rcAt].(*routev3.RouteConfiguration).Name}).(*routev3.RouteConfiguration)
			rc.VirtualHosts = slices.Clone(rs[rcAt].(*routev3.RouteConfiguration).VirtualHosts)
			j := (i / 2 * 7919) % len(rc.VirtualHosts)
			vh := proto.Clone(rc.VirtualHosts[j]).(*routev3.VirtualHost)
			vh.Routes[0].Match.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: fmt.Sprint("/api", i)}
			rc.VirtualHosts[j] = vh
			rs[rcAt], want = rc, resource.RouteType
			next[resource.RouteType] = rs
		}
		i++
		cur = next
		gen := h.srv.Set(fleet, next)
		p.waitPush(b, want)
		waitGen(gen)
	}
}

// sotwProxy is a state-of-the-world client subscribed as Envoy is: clusters
// and listeners all, endpoints, route configurations and secrets by name.
// It ACKs every response and reports its type on got.
type sotwProxy struct {
	got chan string
}

func newSotWProxy(tb testing.TB, h *harness, out *translate.Output) *sotwProxy {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(h.conn).StreamAggregatedResources(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	names := map[string][]string{}
	for typ, rs := range map[string][]types.Resource{resource.EndpointType: out.Endpoints, resource.RouteType: out.Routes, resource.SecretType: out.Secrets} {
		for _, r := range rs {
			names[typ] = append(names[typ], cachev3.GetResourceName(r))
		}
	}
	sendq := make(chan *discoveryv3.DiscoveryRequest, 1024) // sent from their own goroutine, as in newDeltaProxy
	go func() {
		for r := range sendq {
			if st.Send(r) != nil {
				return
			}
		}
	}()
	for i, typ := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType, resource.SecretType} {
		r := &discoveryv3.DiscoveryRequest{TypeUrl: typ, ResourceNames: names[typ]}
		if i == 0 {
			r.Node = node("bench")
		}
		sendq <- r
	}
	p := &sotwProxy{got: make(chan string, 64)}
	go func() {
		defer close(p.got)
		defer close(sendq)
		for {
			r, err := st.Recv()
			if err != nil {
				return
			}
			sendq <- &discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce, ResourceNames: names[r.TypeUrl]}
			p.got <- r.TypeUrl
		}
	}()
	return p
}

// waitPush waits (bounded) for a response of type typ.
func (p *sotwProxy) waitPush(tb testing.TB, typ string) {
	tb.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case t, ok := <-p.got:
			if !ok {
				tb.Fatal("the stream ended")
			}
			if t == typ {
				return
			}
		case <-timeout:
			tb.Fatalf("no %s pushed", typ)
		}
	}
}
