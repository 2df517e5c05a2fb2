package translate

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"

	"github.com/fleetlb/fleetlb/internal/model"
)

func addr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{127, byte(10 + i>>16), byte(i >> 8), byte(i)})
}

func l4Fleet(n int) *model.Fleet {
	f := &model.Fleet{Name: "bench"}
	for i := range n {
		name := fmt.Sprintf("t/ns/svc-%d/80", i)
		f.L4 = append(f.L4, model.L4Service{Ref: model.Ref{Tenant: "t", Namespace: "ns", Name: fmt.Sprint("svc-", i)}, VIP: addr(i), Port: 80, Protocol: model.TCP, Backend: name})
		f.Backends = append(f.Backends, model.Backend{Name: name, Protocol: model.BackendTCP, HealthCheck: &model.HealthCheck{Type: model.HealthTCP},
			Groups: []model.EndpointGroup{{Cluster: "a", Endpoints: []model.Endpoint{{Address: addr(1), Port: 30000}, {Address: addr(2), Port: 30000}, {Address: addr(3), Port: 30000}}}}})
	}
	return f
}

// l7Fleet has n routes spread over n/10 virtual hosts, each route with its own backend.
func l7Fleet(n int) *model.Fleet {
	f := &model.Fleet{Name: "bench", HTTP: &model.SharedListener{VIP: addr(1), Port: 80}}
	for v := range n / 10 {
		vh := model.VirtualHost{Name: fmt.Sprintf("h%d.example.com", v), Hostnames: []string{fmt.Sprintf("h%d.example.com", v)}}
		for r := range 10 {
			name := fmt.Sprintf("t/ns/svc-%d-%d/80", v, r)
			vh.Routes = append(vh.Routes, model.Route{Name: fmt.Sprint("r", r),
				Match:   model.Match{PathType: model.PathPrefix, Path: fmt.Sprintf("/p%d", r)},
				Forward: &model.Forward{Backends: []model.WeightedBackend{{Backend: name, Weight: 1}}}})
			f.Backends = append(f.Backends, model.Backend{Name: name, Protocol: model.BackendHTTP1,
				Groups: []model.EndpointGroup{{Cluster: "a", Endpoints: []model.Endpoint{{Address: addr(1), Port: uint16(30000 + r)}}}}})
		}
		f.VirtualHosts = append(f.VirtualHosts, vh)
	}
	return f
}

func benchTranslate(b *testing.B, f *model.Fleet) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Translate(f); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTranslateL4(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		f := l4Fleet(n)
		b.Run(fmt.Sprint(n), func(b *testing.B) { benchTranslate(b, f) })
	}
}

func BenchmarkTranslateL7(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		f := l7Fleet(n)
		b.Run(fmt.Sprint(n), func(b *testing.B) { benchTranslate(b, f) })
	}
}

// BenchmarkOneRouteChange10k translates a 10k-route fleet after one route's
// match changed and reports how many resources differ by content, which is
// what delta xDS pushes.
func BenchmarkOneRouteChange10k(b *testing.B) {
	f := l7Fleet(10000)
	before, err := Translate(f)
	if err != nil {
		b.Fatal(err)
	}
	f.VirtualHosts[500].Routes[3].Match.Path = "/changed"
	var changed int
	b.ReportAllocs()
	for b.Loop() {
		after, err := Translate(f)
		if err != nil {
			b.Fatal(err)
		}
		changed = diffCount(before, after)
	}
	if changed != 1 {
		b.Fatalf("%d resources changed, want 1 (the route configuration)", changed)
	}
	b.ReportMetric(float64(changed), "changed-resources")
}

func diffCount(a, b *Output) int {
	n := 0
	index := func(rs []types.Resource) map[string][]byte {
		m := map[string][]byte{}
		for _, r := range rs {
			bs, _ := proto.MarshalOptions{Deterministic: true}.Marshal(r.(proto.Message))
			m[nameOf(r)] = bs
		}
		return m
	}
	for typ, pa := range a.ByType() {
		ia, ib := index(pa), index(b.ByType()[typ])
		for k, v := range ib {
			if string(ia[k]) != string(v) {
				n++
			}
		}
		for k := range ia {
			if _, ok := ib[k]; !ok {
				n++
			}
		}
	}
	return n
}

// BenchmarkIncrementalOneRouteChange10k is BenchmarkOneRouteChange10k through
// Incremental: each iteration changes one route's match (alternately) and
// counts the resources rebuilt (not the same pointer as before).
func BenchmarkIncrementalOneRouteChange10k(b *testing.B) {
	f := l7Fleet(10000)
	var x Incremental
	prev, _, err := x.Translate(f)
	if err != nil {
		b.Fatal(err)
	}
	rebuilt, i := 0, 0
	b.ReportAllocs()
	for b.Loop() {
		// A new model each time, sharing the unchanged parts, as the builder hands it.
		g := *f
		g.VirtualHosts = slices.Clone(f.VirtualHosts)
		v := &g.VirtualHosts[500]
		v.Routes = slices.Clone(v.Routes)
		v.Routes[3].Match.Path = fmt.Sprint("/changed", i%2)
		i++
		out, _, err := x.Translate(&g)
		if err != nil {
			b.Fatal(err)
		}
		for typ, rs := range out.ByType() {
			for j, r := range rs {
				if j >= len(prev.ByType()[typ]) || prev.ByType()[typ][j] != r {
					rebuilt++
				}
			}
		}
		prev = out
	}
	b.ReportMetric(float64(rebuilt)/float64(i), "rebuilt-resources/op")
}
