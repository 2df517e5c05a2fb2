package server

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func edsCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{Name: name, ConnectTimeout: durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}}
}

// Resources handed again (the same pointers) are not checked again, yet a
// Set stays refused while it holds an invalid or inconsistent resource, and
// versions are those of the content, however the Set was put together.
func TestApplyReusesCheckedResources(t *testing.T) {
	s := New(Options{Log: logr.Discard()})
	a, b := edsCluster("a"), edsCluster("b")
	claA, claB := &endpointv3.ClusterLoadAssignment{ClusterName: "a"}, &endpointv3.ClusterLoadAssignment{ClusterName: "b"}
	set := func(cs, es []types.Resource) error {
		s.Set(fleet, map[resource.Type][]types.Resource{resource.ClusterType: cs, resource.EndpointType: es})
		s.Flush()
		return s.LastError(fleet)
	}
	if err := set([]types.Resource{a, b}, []types.Resource{claA, claB}); err != nil {
		t.Fatal(err)
	}
	v1, _ := s.Version(fleet)

	// b's endpoints missing: not consistent, whatever was reused.
	if err := set([]types.Resource{a, b}, []types.Resource{claA}); err == nil || !strings.Contains(err.Error(), "consistent") {
		t.Fatalf("a cluster without its endpoints: %v", err)
	}
	// An invalid cluster, handed twice: refused both times.
	bad := &clusterv3.Cluster{Name: "bad", ConnectTimeout: durationpb.New(-time.Second)}
	for range 2 {
		if err := set([]types.Resource{a, b, bad}, []types.Resource{claA, claB}); err == nil {
			t.Fatal("an invalid cluster was accepted")
		}
	}
	// Equal content in new resources: the same version as before.
	if err := set([]types.Resource{edsCluster("b"), a}, []types.Resource{claB, &endpointv3.ClusterLoadAssignment{ClusterName: "a"}}); err != nil {
		t.Fatal(err)
	}
	if v2, _ := s.Version(fleet); v2 != v1 {
		t.Fatalf("version %s for the same content, was %s", v2, v1)
	}
	// A changed endpoint: a new version, and Hash agrees with what apply computed per type.
	claA2 := &endpointv3.ClusterLoadAssignment{ClusterName: "a", Endpoints: []*endpointv3.LocalityLbEndpoints{{}}}
	if err := set([]types.Resource{a, b}, []types.Resource{claA2, claB}); err != nil {
		t.Fatal(err)
	}
	if v3, _ := s.Version(fleet); v3 == v1 {
		t.Fatal("a changed endpoint kept the version")
	}
	want, err := Hash([]types.Resource{claB, claA2})
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	got := s.serving[fleet].versions[resource.EndpointType]
	s.mu.Unlock()
	if got != want {
		t.Fatalf("endpoint version %s, Hash says %s", got, want)
	}
}

// A route configuration that follows one of the same name is checked for
// the virtual hosts it adds: an invalid one is refused, a known one is not
// checked again.
func TestApplyChecksNewVirtualHosts(t *testing.T) {
	s := New(Options{Log: logr.Discard()})
	good := &routev3.VirtualHost{Name: "a", Domains: []string{"a.example.com"}}
	set := func(vhs ...*routev3.VirtualHost) error {
		s.Set(fleet, map[resource.Type][]types.Resource{resource.RouteType: {&routev3.RouteConfiguration{Name: "http", VirtualHosts: vhs}},
			resource.ListenerType: {httpListener()}})
		s.Flush()
		return s.LastError(fleet)
	}
	if err := set(good); err != nil {
		t.Fatal(err)
	}
	bad := &routev3.VirtualHost{Name: "b"} // no domains
	if err := set(good, bad); err == nil || !strings.Contains(err.Error(), "VirtualHosts[1]") {
		t.Fatalf("a new invalid virtual host: %v", err)
	}
	if err := set(good, &routev3.VirtualHost{Name: "c", Domains: []string{"c.example.com"}}); err != nil {
		t.Fatal(err)
	}
}

func httpListener() *listenerv3.Listener { return rdsListener("http", "http") }

// rdsListener is an HTTP listener whose routes are the route configuration route.
func rdsListener(name, route string) *listenerv3.Listener {
	m := &hcmv3.HttpConnectionManager{StatPrefix: "http", RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
		RouteConfigName: route, ConfigSource: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}}}
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return &listenerv3.Listener{Name: name, Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8080}}}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}}}}}
}

// A Set that changes a few resources of a long list (the same names, at the
// same places) is checked for those alone, and ends where a server that
// sees the list for the first time ends: the same version, the same refusals.
func TestApplyFewChangedResources(t *testing.T) {
	var cs, es []types.Resource
	for i := range 40 {
		name := fmt.Sprintf("c%02d", i)
		cs, es = append(cs, edsCluster(name)), append(es, &endpointv3.ClusterLoadAssignment{ClusterName: name})
	}
	s := New(Options{Log: logr.Discard()})
	set := func(s *Server, cs, es []types.Resource) error {
		s.Set(fleet, map[resource.Type][]types.Resource{resource.ClusterType: cs, resource.EndpointType: es})
		s.Flush()
		return s.LastError(fleet)
	}
	if err := set(s, cs, es); err != nil {
		t.Fatal(err)
	}
	for step := range 6 {
		cs, es = slices.Clone(cs), slices.Clone(es)
		i := step * 7
		name := fmt.Sprintf("c%02d", i)
		es[i] = &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{Priority: uint32(step)}}}
		c := edsCluster(name)
		if step%3 == 1 {
			c.ConnectTimeout = durationpb.New(-time.Second) // invalid
		}
		cs[i] = c
		err := set(s, cs, es)
		fresh := New(Options{Log: logr.Discard()})
		want := set(fresh, cs, es)
		if (err == nil) != (want == nil) {
			t.Fatalf("step %d: error %v, a first Set's %v", step, err, want)
		}
		if err != nil {
			cs = slices.Clone(cs)    // what was handed is never modified
			cs[i] = edsCluster(name) // valid again for the next step
			if err := set(s, cs, es); err != nil {
				t.Fatal(err)
			}
			fresh = New(Options{Log: logr.Discard()})
			if err := set(fresh, cs, es); err != nil {
				t.Fatal(err)
			}
		}
		got, _ := s.Version(fleet)
		if v, _ := fresh.Version(fleet); got != v {
			t.Fatalf("step %d: version %s, a first Set's %s", step, got, v)
		}
	}
}

// A route configuration's version made from its virtual hosts' digests (some
// reused from the previous one) is the version made from scratch (Hash), and
// the wire form put together from theirs is its marshalled form.
func TestRouteConfigurationHashFromVirtualHosts(t *testing.T) {
	vhost := func(i int) *routev3.VirtualHost {
		return &routev3.VirtualHost{Name: fmt.Sprintf("h%d.example.com", i), Domains: []string{fmt.Sprintf("h%d.example.com", i)},
			TypedPerFilterConfig: map[string]*anypb.Any{"b": {TypeUrl: "x/b"}, "a": {TypeUrl: "x/a", Value: []byte{byte(i)}}, "c": {}},
			Routes: []*routev3.Route{{Name: "r", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: fmt.Sprint("/", i)}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: fmt.Sprint("c", i)}}}}}}
	}
	var prev checked
	var hosts []*routev3.VirtualHost
	for step := range 5 {
		hosts = slices.Clone(hosts)
		hosts = append(hosts, vhost(step), &routev3.VirtualHost{}) // an empty one too
		if step > 0 {
			hosts[0] = vhost(100 + step)
		}
		for _, rc := range []*routev3.RouteConfiguration{
			{Name: "http", VirtualHosts: hosts},
			{VirtualHosts: hosts}, // no name
			{Name: "http", VirtualHosts: hosts, ValidateClusters: wrapperspb.Bool(true)}, // another field: marshalled whole
		} {
			want, err := Hash([]types.Resource{rc})
			if err != nil {
				t.Fatal(err)
			}
			got, vhosts, wire, err := contentHash(rc, prev)
			if err != nil {
				t.Fatal(err)
			}
			if v := typeVersion([]named{{rc.Name, got}}); v != want {
				t.Fatalf("step %d: version of %q differs from one made from scratch", step, rc.Name)
			}
			// The wire form put together from the virtual hosts is what is pushed.
			if b, err := cachev3.MarshalResource(rc); err != nil || (wire != nil && !bytes.Equal(wire.bytes(), b)) {
				t.Fatalf("step %d: wire form of %q differs from its marshalled form (%v)", step, rc.Name, err)
			}
			if rc.ValidateClusters == nil && rc.Name != "" {
				prev = checked{res: rc, vhosts: vhosts}
			}
		}
	}
}
