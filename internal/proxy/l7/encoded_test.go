package l7

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func encode(t *testing.T, rc *routev3.RouteConfiguration) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// randomVHost is one of a small pool of virtual hosts, so that updates
// bring back hosts seen before, share domains (duplicates) and wildcards of
// equal length (order decides), and are sometimes invalid.
func randomVHost(rng *rand.Rand) *routev3.VirtualHost {
	domains := []string{"a.com", "B.com", "c.com", "*.a.com", "*.b.com", "*.com", "www.*", "api.*", "*", "x.c.com", "a*b.com"}
	v := &routev3.VirtualHost{Name: fmt.Sprint("v", rng.IntN(6))}
	for range rng.IntN(3) + map[bool]int{true: 0, false: 1}[rng.IntN(60) == 0] { // now and then no domain
		switch rng.IntN(16) {
		case 0: // shared: duplicates, wildcards of equal length, invalid
			v.Domains = append(v.Domains, domains[rng.IntN(len(domains))])
		case 2:
			v.Domains = append(v.Domains, fmt.Sprintf("*.h%d.example", rng.IntN(1000)))
		default: // a domain only this host has, most of the time
			v.Domains = append(v.Domains, fmt.Sprintf("h%d.example", rng.IntN(100000)))
		}
	}
	if rng.IntN(4) == 0 {
		v.RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(uint32(1 + rng.IntN(2)))}
	}
	r := &routev3.Route{Name: "r", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: fmt.Sprint("/", rng.IntN(3))}}}
	if rng.IntN(2) == 0 {
		r.Action = &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: fmt.Sprint("c", rng.IntN(3))}}}
	} else {
		status := uint32(200 + 100*rng.IntN(4))
		if rng.IntN(30) == 0 {
			status = 99 // invalid
		}
		r.Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: status}}
	}
	v.Routes = []*routev3.Route{r}
	return v
}

// TestEncodedCompileMatchesFullCompile drives random sequences of route
// configuration updates (hosts replaced, inserted, removed, swapped,
// repeated, top-level fields changed; valid and invalid) through the
// incremental compilation and checks each against CompileRouteConfig of the
// decoded configuration: the same error, or an equal table. Each accepted
// update becomes the base of the next, as in the Set.
func TestEncodedCompileMatchesFullCompile(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	overlaid := false // some table had changes over a shared index
	accepted, rejected := 0, 0
	defer func() {
		if !overlaid {
			t.Error("no table was compiled over a shared index")
		}
		if accepted < rejected || rejected == 0 {
			t.Errorf("%d updates accepted, %d rejected: the sequences test too little of one", accepted, rejected)
		}
	}()
	for seq := range 40 {
		var st *routeState
		rc := &routev3.RouteConfiguration{Name: "http"}
		for range 12 {
			rc.VirtualHosts = append(rc.VirtualHosts, randomVHost(rng))
		}
		for step := range 60 {
			next := proto.Clone(rc).(*routev3.RouteConfiguration)
			vs := next.VirtualHosts
			switch op := rng.IntN(8); {
			case op == 0 && len(vs) > 0:
				vs[rng.IntN(len(vs))] = randomVHost(rng)
			case op == 1:
				i := rng.IntN(len(vs) + 1)
				vs = slices.Insert(vs, i, randomVHost(rng))
			case op == 2 && len(vs) > 0:
				i := rng.IntN(len(vs))
				vs = slices.Delete(vs, i, i+1)
			case op == 3 && len(vs) > 1:
				i, j := rng.IntN(len(vs)), rng.IntN(len(vs))
				vs[i], vs[j] = vs[j], vs[i]
			case op == 4 && len(vs) > 0: // the same host twice
				vs = append(vs, proto.Clone(vs[rng.IntN(len(vs))]).(*routev3.VirtualHost))
			case op == 5:
				next.RequestHeadersToRemove = []string{fmt.Sprint("x-", rng.IntN(2))}
				if rng.IntN(10) == 0 {
					next.RequestHeadersToRemove = []string{"host"} // invalid
				}
			case op == 6 && rng.IntN(10) == 0:
				next.ValidateClusters = wrapperspb.Bool(true) // unsupported
			case op == 7 && len(vs) > 2: // a replacement and a removal at once
				vs[0] = randomVHost(rng)
				vs = vs[:len(vs)-1]
			}
			next.VirtualHosts = vs
			b := encode(t, next)
			want, wantErr := CompileRouteConfig(next)
			p, err := compileEncoded("http", b, st)
			if (err == nil) != (wantErr == nil) || err != nil && err.Error() != wantErr.Error() {
				t.Fatalf("sequence %d step %d: error %v, the full compilation's %v", seq, step, err, wantErr)
			}
			if err != nil {
				rejected++
				continue // rejected: the previous configuration stays
			}
			accepted++
			if p.fullCompileTable != nil {
				t.Fatalf("sequence %d step %d: the incremental compilation failed where the full one succeeded", seq, step)
			}
			if got := flattened(p.state.table); !reflect.DeepEqual(got, want) {
				t.Fatalf("sequence %d step %d: the incremental table differs from the full compilation's\nincremental %+v\nfull %+v", seq, step, got, want)
			}
			overlaid = overlaid || len(p.state.table.exactChanged) > 0
			p.commit()
			st, rc = p.state, next
		}
	}
}

// TestEncodedCompileReusesUnchangedHosts: at a thousand virtual hosts, one
// changed is the only one decoded and compiled; the others keep their
// compiled form and their place.
func TestEncodedCompileReusesUnchangedHosts(t *testing.T) {
	rc := &routev3.RouteConfiguration{Name: "http", ResponseHeadersToAdd: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-by", Value: "fleetlb"}}}}
	for i := range 1000 {
		rc.VirtualHosts = append(rc.VirtualHosts, vhost(fmt.Sprintf("v%04d", i), fmt.Sprintf("v%04d.example", i), fmt.Sprintf("*.v%04d.example", i)))
	}
	p, err := compileEncoded("http", encode(t, rc), nil)
	if err != nil {
		t.Fatal(err)
	}
	p.commit()
	first := p.state.table
	rc.VirtualHosts[500] = vhost("v0500", "v0500.example", "new.example")
	p, err = compileEncoded("http", encode(t, rc), p.state)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.added) != 1 || len(p.removed) != 1 || p.shifted {
		t.Fatalf("one host changed in place: added %d, removed %d, shifted %v; want 1, 1, false", len(p.added), len(p.removed), p.shifted)
	}
	p.commit()
	rt := p.state.table
	for _, host := range []string{"v0000.example", "v0499.example", "x.v0501.example"} {
		if rt.virtualHost(host) != first.virtualHost(host) {
			t.Errorf("%s: compiled again though unchanged", host)
		}
	}
	if rt.virtualHost("new.example") == nil || rt.virtualHost("new.example") != rt.virtualHost("v0500.example") {
		t.Error("the changed host does not serve its new domain")
	}
	if vh := rt.virtualHost("x.v0500.example"); vh != nil {
		t.Errorf("the changed host's dropped wildcard still matches: %s", vh.name)
	}
	if len(rt.headers.respAdd) != 1 {
		t.Errorf("the route configuration's own fields were lost: %+v", rt.headers)
	}
	// One host inserted at the front: the others move, none is compiled again.
	rc.VirtualHosts = slices.Insert(rc.VirtualHosts, 0, vhost("first", "first.example"))
	p, err = compileEncoded("http", encode(t, rc), p.state)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.added) != 1 || len(p.removed) != 0 || !p.shifted {
		t.Fatalf("one host inserted: added %d, removed %d, shifted %v; want 1, 0, true", len(p.added), len(p.removed), p.shifted)
	}
}

// TestSetEncodedUpdates: the Set installs what compiles, keeps everything on
// an error (the next update still compiles over the last good one), and names
// a resource whose route configuration carries another name.
func TestSetEncodedUpdates(t *testing.T) {
	s := NewSet(nil)
	rc := &routev3.RouteConfiguration{Name: "http", VirtualHosts: []*routev3.VirtualHost{vhost("a", "a.com"), vhost("b", "b.com")}}
	if err := s.UpdateEncodedRouteConfigs(map[string][]byte{"http": encode(t, rc)}, nil); err != nil {
		t.Fatal(err)
	}
	good := s.route("http")
	bad := proto.Clone(rc).(*routev3.RouteConfiguration)
	bad.VirtualHosts = append(bad.VirtualHosts, vhost("c", "A.com"))
	err := s.UpdateEncodedRouteConfigs(map[string][]byte{"http": encode(t, bad)}, nil)
	if want := `route_configuration "http": virtual_hosts[2] "c": domain "a.com" is already used by virtual host "a"`; err == nil || err.Error() != want {
		t.Fatalf("duplicate domain: %v, want %s", err, want)
	}
	if s.route("http") != good {
		t.Fatal("a rejected update changed the table")
	}
	rc.VirtualHosts[1] = vhost("b", "b.com", "bb.com")
	if err := s.UpdateEncodedRouteConfigs(map[string][]byte{"http": encode(t, rc)}, nil); err != nil {
		t.Fatal(err)
	}
	if rt := s.route("http"); rt.virtualHost("bb.com") == nil || rt.virtualHost("a.com") != good.virtualHost("a.com") {
		t.Error("the update after a rejected one was not compiled over the last good one")
	}
	if err := s.UpdateEncodedRouteConfigs(map[string][]byte{"other": encode(t, rc)}, nil); err == nil {
		t.Error("a route configuration named http was accepted as resource other")
	}
	if err := s.UpdateEncodedRouteConfigs(nil, []string{"http"}); err != nil || s.route("http") != nil {
		t.Errorf("removal: %v, table %v", err, s.route("http"))
	}
}

// flattened is rt with its exact-domain overlay applied, as the full
// compilation builds it.
func flattened(rt *RouteTable) *RouteTable {
	out := *rt
	out.exact = maps.Clone(rt.exact)
	for d, vh := range rt.exactChanged {
		if vh == nil {
			delete(out.exact, d)
		} else {
			out.exact[d] = vh
		}
	}
	out.exactChanged = nil
	return &out
}
