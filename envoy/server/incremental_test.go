package server

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/protobuf/proto"
)

// randomSets is a sequence of Sets over a small world: EDS clusters and
// their endpoints, listeners naming route configurations, and route
// configurations, where each step adds, drops or changes a few of them
// (sometimes leaving a reference dangling, or a resource invalid). Lists
// handed over are never modified afterwards.
func randomSets(seed uint64, steps int) []map[resource.Type][]types.Resource {
	rnd := rand.New(rand.NewPCG(seed, 1))
	world := map[resource.Type]map[string]types.Resource{}
	for _, typ := range xdsTypes {
		world[typ] = map[string]types.Resource{}
	}
	points := map[string]string{} // listener → its route configuration
	// repair makes the world consistent and valid again.
	repair := func() {
		for name := range world[resource.ClusterType] {
			if world[resource.EndpointType][name] == nil {
				world[resource.EndpointType][name] = &endpointv3.ClusterLoadAssignment{ClusterName: name}
			}
		}
		for name := range world[resource.EndpointType] {
			if world[resource.ClusterType][name] == nil {
				delete(world[resource.EndpointType], name)
			}
		}
		pointed := map[string]bool{}
		for l := range world[resource.ListenerType] {
			pointed[points[l]] = true
		}
		for name, r := range world[resource.RouteType] {
			if !pointed[name] {
				delete(world[resource.RouteType], name)
			} else if r.(*routev3.RouteConfiguration).Validate() != nil {
				world[resource.RouteType][name] = &routev3.RouteConfiguration{Name: name}
			}
		}
		for name := range pointed {
			if world[resource.RouteType][name] == nil {
				world[resource.RouteType][name] = &routev3.RouteConfiguration{Name: name}
			}
		}
	}
	var sets []map[resource.Type][]types.Resource
	for step := range steps {
		for range 1 + rnd.IntN(4) {
			i := rnd.IntN(12)
			switch rnd.IntN(7) {
			case 0: // a cluster and its endpoints
				name := fmt.Sprint("c", i)
				world[resource.ClusterType][name] = edsCluster(name)
				world[resource.EndpointType][name] = &endpointv3.ClusterLoadAssignment{ClusterName: name,
					Endpoints: []*endpointv3.LocalityLbEndpoints{{Priority: uint32(step % 3)}}}
			case 1: // a cluster and its endpoints go; now and then only one of them
				name := fmt.Sprint("c", i)
				switch rnd.IntN(8) {
				case 0:
					delete(world[resource.ClusterType], name)
				case 1:
					delete(world[resource.EndpointType], name)
				default:
					delete(world[resource.ClusterType], name)
					delete(world[resource.EndpointType], name)
				}
			case 2: // endpoints change
				name := fmt.Sprint("c", i)
				world[resource.EndpointType][name] = &endpointv3.ClusterLoadAssignment{ClusterName: name,
					Endpoints: []*endpointv3.LocalityLbEndpoints{{Priority: uint32(rnd.IntN(3))}}}
			case 3, 4: // a listener and its route configuration appear or change; now and then it points elsewhere
				k := i % 4
				route := fmt.Sprint("r", k)
				if rnd.IntN(8) == 0 {
					route = fmt.Sprint("r", rnd.IntN(4))
				}
				world[resource.ListenerType][fmt.Sprint("l", k)] = rdsListener(fmt.Sprint("l", k), route)
				points[fmt.Sprint("l", k)] = route
				vhs := []*routev3.VirtualHost{{Name: "a", Domains: []string{"a.example.com"}}}
				switch rnd.IntN(10) {
				case 0:
					vhs = append(vhs, &routev3.VirtualHost{Name: "bad"}) // no domains: invalid
				case 1, 2, 3, 4:
					vhs = append(vhs, &routev3.VirtualHost{Name: fmt.Sprint("b", step), Domains: []string{fmt.Sprintf("b%d.example.com", step)}})
				}
				world[resource.RouteType][route] = &routev3.RouteConfiguration{Name: route, VirtualHosts: vhs}
			case 5, 6: // a listener goes, with its route configuration but now and then
				k := i % 4
				delete(world[resource.ListenerType], fmt.Sprint("l", k))
				if rnd.IntN(8) != 0 {
					delete(world[resource.RouteType], fmt.Sprint("r", k))
				}
			}
		}
		if rnd.IntN(2) == 0 {
			repair()
		}
		set := map[resource.Type][]types.Resource{}
		for typ, rs := range world {
			for _, name := range slices.Sorted(mapsKeys(rs)) {
				set[typ] = append(set[typ], rs[name])
			}
		}
		sets = append(sets, set)
	}
	return sets
}

// A server applying Set after Set (reusing what it checked, keeping its
// reference counts) ends each step where a server given that Set alone ends:
// the same refusal or the same version.
func TestApplyMatchesFirstSet(t *testing.T) {
	for seed := range uint64(8) {
		s := New(Options{Log: logr.Discard()})
		accepted, refused := 0, 0
		for step, set := range randomSets(seed, 60) {
			s.Set(fleet, set)
			s.Flush()
			fresh := New(Options{Log: logr.Discard()})
			fresh.Set(fleet, set)
			fresh.Flush()
			got, want := s.LastError(fleet), fresh.LastError(fleet)
			if (got == nil) != (want == nil) {
				t.Fatalf("seed %d step %d: error %v, a first Set's %v", seed, step, got, want)
			}
			if got != nil {
				refused++
				continue
			}
			accepted++
			if v, w := mustVersion(s), mustVersion(fresh); v != w {
				t.Fatalf("seed %d step %d: version %s, a first Set's %s", seed, step, v, w)
			}
		}
		if accepted == 0 || refused == 0 {
			t.Fatalf("seed %d: %d accepted, %d refused: the sequence tests only one way", seed, accepted, refused)
		}
	}
}

func mustVersion(s *Server) string { v, _ := s.Version(fleet); return v }

// deltaState is what a delta client holds: per type, name → version, after
// checking each version is the hash of the bytes received.
type deltaState map[string]map[string]string

func (d deltaState) apply(t *testing.T, r *discoveryv3.DeltaDiscoveryResponse) {
	t.Helper()
	if d[r.TypeUrl] == nil {
		d[r.TypeUrl] = map[string]string{}
	}
	for _, res := range r.Resources {
		m, err := res.GetResource().UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		if v, err := Hash([]types.Resource{m}); err != nil || typeVersion([]named{{res.Name, res.Version}}) != v {
			t.Fatalf("%s %q sent as version %s, what was sent is not that version (%v)", r.TypeUrl, res.Name, res.Version, err)
		}
		d[r.TypeUrl][res.Name] = res.Version
	}
	for _, name := range r.RemovedResources {
		delete(d[r.TypeUrl], name)
	}
}

// A delta proxy that stays connected while the fleet changes Set after Set
// (answered from the change log) holds, after each acknowledged change,
// exactly what is served, and what a proxy connecting afresh is sent.
// Clusters and listeners are subscribed by wildcard, endpoints and route
// configurations by the names those refer to, as fleetlb-proxy does.
func TestDeltaStreamMatchesFreshStream(t *testing.T) {
	t.Run("log", func(t *testing.T) { testDeltaStreamMatchesFreshStream(t, 1024) })
	// A log of two: most changes are compared name by name, some are too
	// many to log, some fall off the log while a response is on its way.
	t.Run("short log", func(t *testing.T) { testDeltaStreamMatchesFreshStream(t, 2) })
}

func testDeltaStreamMatchesFreshStream(t *testing.T, logSize int) {
	old := minLog
	t.Cleanup(func() { minLog = old }) // after the server stopped: cleanups run last first
	minLog = logSize
	h := startWith(t, Options{Debounce: time.Hour, MaxDelay: time.Hour})
	acked := make(chan uint64, 256)
	h.srv.OnAcked(func(_ string, g uint64) { acked <- g })
	first := h.srv.Set(fleet, map[resource.Type][]types.Resource{})
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(time.Millisecond) {
		if _, g := h.srv.Version(fleet); g == first {
			break
		} else if time.Now().After(deadline) {
			t.Fatal("the first Set was not applied")
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(h.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *discoveryv3.DeltaDiscoveryResponse, 64)
	go func() {
		defer close(got)
		for {
			r, err := st.Recv()
			if err != nil {
				return
			}
			got <- r
		}
	}()
	send := func(r *discoveryv3.DeltaDiscoveryRequest) {
		if err := st.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	held := deltaState{}
	subscribed := map[string]map[string]bool{resource.EndpointType: {}, resource.RouteType: {}}
	send(&discoveryv3.DeltaDiscoveryRequest{Node: node("d1"), TypeUrl: resource.ClusterType, ResourceNamesSubscribe: []string{"*"}})
	send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResourceNamesSubscribe: []string{"*"}})
	// follow subscribes to what the held clusters and listeners refer to, and unsubscribes from the rest.
	follow := func() {
		want := map[string]map[string]bool{resource.EndpointType: {}, resource.RouteType: {}}
		for _, typ := range []string{resource.ClusterType, resource.ListenerType} {
			for name := range held[typ] {
				for rt, names := range cachev3.GetResourceReferences(map[string]types.ResourceWithTTL{name: {Resource: h.srv.servedResource(typ, name)}}) {
					for n := range names {
						if want[rt] != nil {
							want[rt][n] = true
						}
					}
				}
			}
		}
		for typ, names := range want {
			var sub, unsub []string
			for n := range names {
				if !subscribed[typ][n] {
					sub = append(sub, n)
				}
			}
			for n := range subscribed[typ] {
				if !names[n] {
					unsub = append(unsub, n)
					delete(held[typ], n)
				}
			}
			if len(sub)+len(unsub) > 0 {
				subscribed[typ] = names
				send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: typ, ResourceNamesSubscribe: sub, ResourceNamesUnsubscribe: unsub})
			}
		}
	}
	// settle handles responses (ACKing each) until the fleet acknowledged
	// gen and the proxy holds what is served. (A fleet counts as having
	// acknowledged a change once every name its proxies subscribe to is
	// acknowledged: a route configuration a listener just started to name
	// may still be on its way.)
	settle := func(gen uint64) {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for h.srv.AckedGeneration(fleet) < gen || !reflect.DeepEqual(normalize(held), normalize(h.srv.servedVersions())) {
			select {
			case r, ok := <-got:
				if !ok {
					t.Fatal("the delta stream ended")
				}
				held.apply(t, r)
				send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce})
				follow()
			case <-acked:
			case <-timeout:
				t.Fatalf("generation %d not acknowledged (acked %d), or the proxy holds\n%v\nthe fleet is served\n%v",
					gen, h.srv.AckedGeneration(fleet), held, h.srv.servedVersions())
			}
		}
	}
	settle(first)
	accepted := 0
	for _, set := range randomSets(3, 80) {
		gen := h.srv.Set(fleet, set)
		h.srv.Flush()
		if h.srv.LastError(fleet) != nil {
			continue
		}
		accepted++
		settle(gen)
	}
	if accepted < 20 {
		t.Fatalf("only %d of 80 Sets accepted", accepted)
	}

	// A proxy connecting now is sent what the first one holds.
	fresh, err := discoveryv3.NewAggregatedDiscoveryServiceClient(h.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	freshHeld := deltaState{}
	for i, typ := range xdsTypes {
		r := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: typ, ResourceNamesSubscribe: []string{"*"}}
		if i == 0 {
			r.Node = node("d2")
		}
		if err := fresh.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	for range xdsTypes {
		r, err := fresh.Recv()
		if err != nil {
			t.Fatal(err)
		}
		freshHeld.apply(t, r)
	}
	if !reflect.DeepEqual(normalize(held), normalize(freshHeld)) {
		t.Fatalf("the proxy holds\n%v\na fresh one was sent\n%v", held, freshHeld)
	}
}

func normalize(d deltaState) deltaState {
	out := deltaState{}
	for typ, m := range d {
		if len(m) > 0 {
			out[typ] = m
		}
	}
	return out
}

// servedVersions is what the fleet is served: per type, name → version.
func (s *Server) servedVersions() deltaState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := deltaState{}
	for typ, ts := range s.fleets[fleet].types {
		out[typ] = map[string]string{}
		for name, it := range ts.items {
			out[typ][name] = it.version
		}
	}
	return out
}

func (s *Server) servedResource(typ, name string) types.Resource {
	s.mu.Lock()
	defer s.mu.Unlock()
	if it := s.fleets[fleet].types[typ].items[name]; it != nil {
		return it.res
	}
	return nil
}

// A fleet with a state-of-the-world and a delta proxy: each gets a change
// its way, and the fleet counts it acknowledged only once both did.
func TestSotWAndDeltaProxiesOfOneFleet(t *testing.T) {
	h := start(t)
	gen := h.srv.Set(fleet, clusters(4, time.Second))
	s := sotw(t, h, "s1")
	s.ack(s.recv())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d, err := discoveryv3.NewAggregatedDiscoveryServiceClient(h.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node("d1"), TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	r, err := d.Recv()
	if err != nil || len(r.Resources) != 4 {
		t.Fatalf("the delta proxy got %v (%v), want the 4 clusters", r, err)
	}
	if err := d.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: r.Nonce}); err != nil {
		t.Fatal(err)
	}
	waitAcked(t, h.srv, gen)

	changed := clusters(4, time.Second)
	changed[resource.ClusterType][2] = clusters(4, 3*time.Second)[resource.ClusterType][2]
	gen = h.srv.Set(fleet, changed)
	if r, err = d.Recv(); err != nil || len(r.Resources) != 1 || r.Resources[0].Name != "c02" {
		t.Fatalf("the delta proxy got %v (%v), want c02 alone", r, err)
	}
	if err := d.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: r.Nonce}); err != nil {
		t.Fatal(err)
	}
	rs := s.recv()
	if len(rs.Resources) != 4 {
		t.Fatalf("the state-of-the-world proxy got %d clusters, want all 4", len(rs.Resources))
	}
	v, _ := h.srv.Version(fleet)
	if want := h.srv.servingVersion(resource.ClusterType); rs.VersionInfo != want {
		t.Fatalf("the state-of-the-world proxy got version %s, the served clusters are %s (snapshot %s)", rs.VersionInfo, want, v)
	}
	// Once the delta proxy's ACK is taken, the generation still waits for the other.
	for deadline := time.Now().Add(20 * time.Second); !h.srv.deltaCurrent(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the delta proxy's ACK was not taken")
		}
	}
	if h.srv.AckedGeneration(fleet) >= gen {
		t.Fatal("acknowledged before the state-of-the-world proxy ACKed")
	}
	s.ack(rs)
	waitAcked(t, h.srv, gen)
}

func (s *Server) servingVersion(typ string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.serving[fleet].versions[typ]
}

// deltaCurrent reports whether every delta stream of the fleet acknowledged what is served.
func (s *Server) deltaCurrent() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.streams {
		if st.delta && st.fleet == fleet && !s.current(st, s.serving[fleet]) {
			return false
		}
	}
	return true
}

// A state-of-the-world proxy connected while clusters come, go and change
// (its snapshot patched from the change log) is sent exactly the clusters of
// each Set, however short the log.
func TestSotWFollowsChanges(t *testing.T) {
	old := minLog
	t.Cleanup(func() { minLog = old })
	minLog = 2
	h := start(t)
	rnd := rand.New(rand.NewPCG(7, 7))
	var c *sotwClient
	last := "" // the version last sent
	for step := range 40 {
		n := 1 + rnd.IntN(12)
		set := clusters(n, time.Duration(1+rnd.IntN(3))*time.Second)
		want := map[string]string{}
		for _, r := range set[resource.ClusterType] {
			b, err := proto.Marshal(r.(*clusterv3.Cluster))
			if err != nil {
				t.Fatal(err)
			}
			want[cachev3.GetResourceName(r)] = string(b)
		}
		gen := h.srv.Set(fleet, set)
		if c == nil {
			c = sotw(t, h, "s1")
		}
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(time.Millisecond) {
			if _, g := h.srv.Version(fleet); g >= gen {
				break
			} else if time.Now().After(deadline) {
				t.Fatalf("step %d: not applied", step)
			}
		}
		served := h.srv.servingVersion(resource.ClusterType)
		for last != served { // an identical Set is not sent again
			r := c.recv()
			c.ack(r)
			if last = r.VersionInfo; last != served {
				continue // an older snapshot's
			}
			got := map[string]string{}
			for _, a := range r.Resources {
				var cl clusterv3.Cluster
				if err := a.UnmarshalTo(&cl); err != nil {
					t.Fatal(err)
				}
				b, _ := proto.Marshal(&cl)
				got[cl.Name] = string(b)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("step %d: sent %d clusters, differing from the %d of the Set", step, len(got), len(want))
			}
		}
		waitAcked(t, h.srv, gen)
	}
}
