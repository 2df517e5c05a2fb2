package proxy

import (
	"context"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
)

// httpStandIn stands in for internal/proxy/l7 until it exists: a listener named
// "http-X" is an HTTP listener using route configuration "routes-X"; each request is
// answered with the first domain of that configuration's first virtual host, looked
// up per request.
type httpStandIn struct {
	mu     sync.Mutex
	routes map[string]*routev3.RouteConfiguration
}

func (h *httpStandIn) IsHTTPListener(l *listenerv3.Listener) bool {
	return strings.HasPrefix(l.GetName(), "http-")
}

func (h *httpStandIn) RouteConfigNames(l *listenerv3.Listener) []string {
	return []string{"routes-" + strings.TrimPrefix(l.GetName(), "http-")}
}

func (h *httpStandIn) SecretNames(*listenerv3.Listener) []string { return nil }

func (h *httpStandIn) UpdateRouteConfigs(rcs []*routev3.RouteConfiguration, removed []string) error {
	h.mu.Lock()
	next := maps.Clone(h.routes)
	h.mu.Unlock()
	if next == nil {
		next = map[string]*routev3.RouteConfiguration{}
	}
	for _, n := range removed {
		delete(next, n)
	}
	for _, rc := range rcs {
		if len(rc.GetVirtualHosts()) == 0 {
			return errors.New(`route_configuration "` + rc.GetName() + `": virtual_hosts is empty`)
		}
		next[rc.GetName()] = rc
	}
	h.mu.Lock()
	h.routes = next
	h.mu.Unlock()
	return nil
}

func (h *httpStandIn) UpdateSecrets([]*tlsv3.Secret, []string) error { return nil }

func (h *httpStandIn) NewListener(l *listenerv3.Listener, _ logr.Logger) (Server, error) {
	rcName := h.RouteConfigNames(l)[0]
	return &httpServer{srv: &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h.mu.Lock()
		rc := h.routes[rcName]
		h.mu.Unlock()
		if rc == nil {
			http.Error(w, "no route configuration", http.StatusNotFound)
			return
		}
		io.WriteString(w, rc.GetVirtualHosts()[0].GetDomains()[0])
	})}}, nil
}

type httpServer struct{ srv *http.Server }

func (s *httpServer) Serve(ln net.Listener) error {
	if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

func (s *httpServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}

// RDS follows the listeners, a route update applies per request without touching
// the listener, and a bad route configuration is NACKed while the old one serves.
func TestHTTPListenerFollowsRDS(t *testing.T) {
	snapCache, xdsAddr, nacks := startXDS(t)
	listener := &listenerv3.Listener{Name: "http-1", Address: addr(0, corev3.SocketAddress_TCP)}
	routes := func(version, domain string) {
		t.Helper()
		var vhosts []*routev3.VirtualHost
		if domain != "" {
			vhosts = []*routev3.VirtualHost{{Name: "vh", Domains: []string{domain}}}
		}
		snap, err := cache.NewSnapshot(version, map[resource.Type][]types.Resource{
			resource.ListenerType: {listener},
			resource.RouteType:    {&routev3.RouteConfiguration{Name: "routes-1", VirtualHosts: vhosts}},
			resource.ClusterType:  {&clusterv3.Cluster{Name: "unused"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := snapCache.SetSnapshot(context.Background(), nodeID, snap); err != nil {
			t.Fatal(err)
		}
	}
	routes("v1", "a.example")

	conn := dialGRPC(t, xdsAddr)
	hs := &httpStandIn{}
	p, err := New(conn, Options{Node: &corev3.Node{Id: nodeID}, Clusters: &clusterStandIn{}, HTTP: hs,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	runProxy(t, p)

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	get := func() string {
		t.Helper()
		resp, err := client.Get("http://" + p.ListenerAddr("http-1").String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	waitFor(t, "routes v1", func() bool { return get() == "a.example" })
	routes("v2", "b.example")
	waitFor(t, "routes v2 on the same listener", func() bool { return get() == "b.example" })

	routes("v3", "") // rejected by the stand-in validator
	waitFor(t, "RDS NACK", func() bool { return len(nacks()) > 0 })
	if got := nacks()[0]; got != `route_configuration "routes-1": virtual_hosts is empty` {
		t.Errorf("error_detail %q", got)
	}
	if got := get(); got != "b.example" {
		t.Errorf("after NACK served %q, want the last good b.example", got)
	}
}
