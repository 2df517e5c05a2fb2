package server

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
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
