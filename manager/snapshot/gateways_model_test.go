package snapshot

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/envoy/translate"
	"github.com/fleetlb/fleetlb/internal/model"
)

// gwRoute is an admitted Gateway route forwarding to one TCP or HTTP backend.
func gwRoute(name string, kind v1.RouteSourceKind, listeners []string, hosts ...v1.Hostname) *admittedRoute {
	rt := &v1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-t", Name: name}, Spec: v1.RouteSpec{
		Source: v1.RouteSource{Kind: kind}, Hostnames: hosts,
		Parents: []v1.RouteParent{{LoadBalancer: "gateway.default.gw", Listeners: listeners}}}}
	proto := model.BackendHTTP1
	if kind == v1.SourceTLSRoute {
		proto = model.BackendTCP
	}
	be := model.Backend{Name: "t/" + name, Protocol: proto, Groups: []model.EndpointGroup{{Cluster: "c", Endpoints: []model.Endpoint{{Address: netip.MustParseAddr("127.0.1.1"), Port: 30000}}}}}
	return &admittedRoute{rt: rt, backends: []model.Backend{be}, gateway: &gatewayRoute{routes: []model.Route{
		{Name: "t/" + name + "/0/0", Match: model.Match{PathType: model.PathPrefix, Path: "/"}, Forward: &model.Forward{Backends: []model.WeightedBackend{{Backend: be.Name, Weight: 1}}}}}}}
}

func gwLB(listeners ...v1.GatewayListener) admittedLB {
	lb := &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-t", Name: "gateway.default.gw"}}
	g := &gatewayParts{vip: netip.MustParseAddr("127.0.70.1")}
	for _, l := range listeners {
		g.listeners = append(g.listeners, gatewayListener{GatewayListener: l})
	}
	return admittedLB{lb: lb, gateway: g}
}

// Listener isolation on one HTTP port (the Gateway API's listener hostname
// matching): a host goes to the most specific listener that matches it, and
// only that listener's routes serve it.
func TestGatewayListenerIsolation(t *testing.T) {
	lb := gwLB(
		v1.GatewayListener{Name: "empty", Port: 80, Protocol: v1.ListenerHTTP},
		v1.GatewayListener{Name: "wild", Port: 80, Protocol: v1.ListenerHTTP, Hostname: "*.example.com"},
		v1.GatewayListener{Name: "exact", Port: 80, Protocol: v1.ListenerHTTP, Hostname: "foo.example.com"},
	)
	routes := []*admittedRoute{
		gwRoute("to-empty", v1.SourceHTTPRoute, []string{"empty"}),
		gwRoute("to-wild", v1.SourceHTTPRoute, []string{"wild"}),
		// Its hostname is under a more specific listener than the one it attaches to: not served there.
		gwRoute("narrow-on-empty", v1.SourceHTTPRoute, []string{"empty"}, "bar.example.com", "other.org"),
		gwRoute("to-exact", v1.SourceHTTPRoute, []string{"exact"}, "*.example.com"),
	}
	f := &model.Fleet{Name: "f"}
	addGateways(f, routes, []admittedLB{lb})
	if _, err := translate.Translate(f); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range f.Gateways[0].Ports[0].VirtualHosts {
		var rs []string
		for _, r := range v.Routes {
			rs = append(rs, r.Name)
		}
		got = append(got, fmt.Sprintf("%s=%v", v.Name, rs))
	}
	want := []string{"*=[t/to-empty/0/0]", "*.example.com=[t/to-wild/0/0]", "foo.example.com=[t/to-exact/0/0]", "other.org=[t/narrow-on-empty/0/0]"}
	if !slices.Equal(got, want) {
		t.Errorf("virtual hosts\n got %v\nwant %v", got, want)
	}
}

// A TLS port passes through by SNI: each name to the most specific listener
// and there to the oldest route; a hostname-less route on a hostname-less
// listener is the catch-all; HTTP routes never land on a TLS port.
func TestGatewayPassthroughRoutes(t *testing.T) {
	lb := gwLB(
		v1.GatewayListener{Name: "any", Port: 443, Protocol: v1.ListenerTLS},
		v1.GatewayListener{Name: "wild", Port: 443, Protocol: v1.ListenerTLS, Hostname: "*.example.com"},
		v1.GatewayListener{Name: "web", Port: 80, Protocol: v1.ListenerHTTP},
	)
	routes := []*admittedRoute{
		gwRoute("old", v1.SourceTLSRoute, []string{"wild"}, "a.example.com"),
		gwRoute("young", v1.SourceTLSRoute, []string{"wild"}, "a.example.com", "b.example.com"),
		gwRoute("catch-all", v1.SourceTLSRoute, []string{"any"}),
		gwRoute("shadowed", v1.SourceTLSRoute, []string{"any"}, "c.example.com"), // *.example.com is more specific
		gwRoute("http", v1.SourceHTTPRoute, []string{"web"}),
	}
	f := &model.Fleet{Name: "f"}
	addGateways(f, routes, []admittedLB{lb})
	if _, err := translate.Translate(f); err != nil {
		t.Fatal(err)
	}
	var tlsPort *model.GatewayPort
	for i := range f.Gateways[0].Ports {
		if f.Gateways[0].Ports[i].Protocol == model.ListenerTLS {
			tlsPort = &f.Gateways[0].Ports[i]
		}
	}
	if tlsPort == nil {
		t.Fatalf("no TLS port in %+v", f.Gateways[0].Ports)
	}
	var got []string
	for _, p := range tlsPort.Passthrough {
		got = append(got, fmt.Sprintf("%s%v>%s", p.Name, p.Hostnames, p.Backend))
	}
	want := []string{"catch-all/any[]>t/catch-all", "old/wild[a.example.com]>t/old", "young/wild[b.example.com]>t/young"}
	if !slices.Equal(got, want) {
		t.Errorf("passthrough\n got %v\nwant %v", got, want)
	}
}

// A redirect without a port gets the Gateway API's: the well-known port of
// its scheme, else the port of the listener that serves it (a client's Host
// may carry no port, and a redirect hostname replaces it). One route on two
// listeners gets each listener's port.
func TestGatewayRedirectPorts(t *testing.T) {
	lb := gwLB(
		v1.GatewayListener{Name: "alt", Port: 8080, Protocol: v1.ListenerHTTP},
		v1.GatewayListener{Name: "web", Port: 80, Protocol: v1.ListenerHTTP},
	)
	a := gwRoute("redir", v1.SourceHTTPRoute, []string{"alt", "web"})
	redirect := func(name string, rd model.Redirect) model.Route {
		return model.Route{Name: name, Match: model.Match{PathType: model.PathPrefix, Path: "/" + name}, Redirect: &rd}
	}
	a.gateway.routes = []model.Route{
		redirect("host-only", model.Redirect{Host: "example.org"}),
		redirect("https", model.Redirect{Scheme: "https"}),
		redirect("http", model.Redirect{Scheme: "http", Host: "example.org"}),
		redirect("explicit", model.Redirect{Port: 8443}),
	}
	f := &model.Fleet{Name: "f"}
	addGateways(f, []*admittedRoute{a}, []admittedLB{lb})
	if _, err := translate.Translate(f); err != nil {
		t.Fatal(err)
	}
	got := map[string]uint16{}
	for _, p := range f.Gateways[0].Ports {
		for _, v := range p.VirtualHosts {
			for _, r := range v.Routes {
				got[fmt.Sprintf("%d%s", p.Port, r.Match.Path)] = r.Redirect.Port
			}
		}
	}
	want := map[string]uint16{
		"8080/host-only": 8080, "8080/https": 443, "8080/http": 80, "8080/explicit": 8443,
		"80/host-only": 80, "80/https": 443, "80/http": 80, "80/explicit": 8443,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("redirect ports\n got %v\nwant %v", got, want)
	}
	if a.gateway.routes[0].Redirect.Port != 0 {
		t.Errorf("the admitted route was changed: port %d", a.gateway.routes[0].Redirect.Port)
	}
}
