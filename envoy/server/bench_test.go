package server

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

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
