package proxy

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/go-logr/logr"
	"google.golang.org/protobuf/proto"

	"github.com/fleetlb/fleetlb/internal/proxy/xdsclient"
)

// refsStandIn is an HTTP side whose listeners name their route
// configurations ("r…") and secrets ("s…") in stat_prefix, so that several
// listeners can share one.
type refsStandIn struct{}

func (refsStandIn) IsHTTPListener(l *listenerv3.Listener) bool { return l.GetStatPrefix() != "" }
func (refsStandIn) RouteConfigNames(l *listenerv3.Listener) []string {
	return refsWithPrefix(l.GetStatPrefix(), "r")
}
func (refsStandIn) SecretNames(l *listenerv3.Listener) []string {
	return refsWithPrefix(l.GetStatPrefix(), "s")
}
func (refsStandIn) UpdateRouteConfigs([]*routev3.RouteConfiguration, []string) error { return nil }
func (refsStandIn) UpdateSecrets([]*tlsv3.Secret, []string) error                    { return nil }
func (refsStandIn) NewListener(*listenerv3.Listener, logr.Logger) (Server, error) {
	return closingServer{}, nil
}

func refsWithPrefix(s, prefix string) []string {
	var out []string
	for _, f := range strings.Fields(s) {
		if strings.HasPrefix(f, prefix) {
			out = append(out, f)
		}
	}
	return out
}

// closingServer accepts and closes until its listener is closed.
type closingServer struct{}

func (closingServer) Serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return nil
		}
		c.Close()
	}
}
func (closingServer) Close() error { return nil }

// TestIncrementalWatchesAndAddressesMatchFullRecompute applies random
// updates that add, change and remove a few clusters and listeners at a time
// (as delta xDS hands them) and checks after each that what the proxy keeps
// incrementally equals what a full recomputation over the whole set gives:
// the EDS, RDS and SDS subscriptions (names shared by several clusters or
// listeners included), which listeners are bound where, and that an update
// is refused exactly when a listener would take an address another one holds.
func TestIncrementalWatchesAndAddressesMatchFullRecompute(t *testing.T) {
	var ports []uint32
	for range 4 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, uint32(ln.Addr().(*net.TCPAddr).Port))
		ln.Close()
	}
	p, err := New(nil, Options{Node: &corev3.Node{Id: nodeID}, Clusters: &clusterStandIn{}, HTTP: refsStandIn{}}, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}

	type listener struct {
		port uint32
		refs string // stat_prefix: route and secret names; "" for TCP
	}
	clusters := map[string]string{} // name → EDS service name ("" when not EDS)
	listeners := map[string]listener{}
	defer func() {
		p.handle(xdsclient.ListenerType, nil, slices.Sorted(maps.Keys(listeners)))
		p.drains.Wait()
	}()

	rng := rand.New(rand.NewPCG(11, 17))
	pick := func(list ...string) string { return list[rng.IntN(len(list))] }
	for step := range 400 {
		if rng.IntN(2) == 0 {
			// A few clusters change or go.
			changed, removed := map[string]proto.Message{}, []string(nil)
			next := maps.Clone(clusters)
			for range 1 + rng.IntN(3) {
				name := fmt.Sprint("c", rng.IntN(8))
				if _, dup := changed[name]; dup || slices.Contains(removed, name) {
					continue
				}
				if _, ok := next[name]; ok && rng.IntN(3) == 0 {
					removed = append(removed, name)
					delete(next, name)
					continue
				}
				switch svc := pick("", "s0", "s1", "s2", "own"); svc {
				case "":
					changed[name] = &clusterv3.Cluster{Name: name, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}}
					next[name] = ""
				case "own": // no service_name: EDS watches the cluster's name
					changed[name] = edsCluster(name, clusterv3.Cluster_ROUND_ROBIN)
					next[name] = name
				default:
					c := edsCluster(name, clusterv3.Cluster_ROUND_ROBIN)
					c.EdsClusterConfig.ServiceName = svc
					changed[name] = c
					next[name] = svc
				}
			}
			if err := p.handle(xdsclient.ClusterType, changed, removed); err != nil {
				t.Fatalf("step %d: clusters: %v", step, err)
			}
			clusters = next
		} else {
			// A listener changes or goes, or one replaces another (a port change).
			changed, removed := map[string]proto.Message{}, []string(nil)
			next := maps.Clone(listeners)
			name := fmt.Sprint("l", rng.IntN(6))
			if _, ok := next[name]; ok && rng.IntN(3) == 0 {
				removed = append(removed, name)
				delete(next, name)
				name = ""
				if rng.IntN(2) == 0 { // another listener takes its place
					if n := fmt.Sprint("l", 6+rng.IntN(3)); !slices.Contains(slices.Collect(maps.Keys(next)), n) {
						name = n
					}
				}
			}
			if name != "" {
				l := listener{port: ports[rng.IntN(len(ports))]}
				if rng.IntN(3) > 0 {
					l.refs = strings.Join([]string{pick("r0", "r1", "r2"), pick("", "r1", "s0", "s1")}, " ")
				}
				lr := &listenerv3.Listener{Name: name, Address: addr(l.port, corev3.SocketAddress_TCP), StatPrefix: l.refs}
				if l.refs == "" {
					lr = tcpListener(t, name, "c0", 0)
					lr.Address = addr(l.port, corev3.SocketAddress_TCP)
				}
				changed[name] = lr
				next[name] = l
			}
			// A full recomputation: refused when a listener's address is
			// held by another that stays (a removed one gives it up first).
			conflict := false
			for n := range changed {
				for other, ol := range listeners {
					if other != n && !slices.Contains(removed, other) && ol.port == next[n].port {
						conflict = true
					}
				}
			}
			err := p.handle(xdsclient.ListenerType, changed, removed)
			if conflict != (err != nil) {
				t.Fatalf("step %d: changed %v removed %v over %v: error %v, want a conflict: %v", step, slices.Collect(maps.Keys(changed)), removed, listeners, err, conflict)
			}
			if err == nil {
				listeners = next
			} else if !strings.Contains(err.Error(), "address is already used") && !strings.Contains(err.Error(), "address already in use") {
				t.Fatalf("step %d: unexpected error %v", step, err)
			}
		}

		// What a full recomputation gives.
		var eds, routes, secrets []string
		for _, svc := range clusters {
			if svc != "" {
				eds = append(eds, svc)
			}
		}
		for n, l := range listeners {
			routes = append(routes, refsWithPrefix(l.refs, "r")...)
			secrets = append(secrets, refsWithPrefix(l.refs, "s")...)
			got := p.ListenerAddr(n)
			if got == nil || got.(*net.TCPAddr).Port != int(l.port) {
				t.Fatalf("step %d: listener %s bound at %v, want port %d", step, n, got, l.port)
			}
		}
		for _, n := range []string{"l0", "l1", "l2", "l3", "l4", "l5", "l6", "l7", "l8"} {
			if _, ok := listeners[n]; !ok && p.ListenerAddr(n) != nil {
				t.Fatalf("step %d: removed listener %s still bound at %v", step, n, p.ListenerAddr(n))
			}
		}
		for _, c := range []struct {
			typeURL string
			want    []string
		}{{xdsclient.EndpointType, eds}, {xdsclient.RouteType, routes}, {xdsclient.SecretType, secrets}} {
			slices.Sort(c.want)
			if got, want := p.client.Subscribed(c.typeURL), slices.Compact(c.want); !slices.Equal(got, want) {
				t.Fatalf("step %d: %s subscribed %v, a full recomputation gives %v", step, c.typeURL, got, want)
			}
		}
	}
}
