//go:build fleetlb_dataplane

package main

import (
	"fmt"
	"sync"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/go-logr/logr"

	"github.com/fleetlb/fleetlb/internal/proxy"
	"github.com/fleetlb/fleetlb/internal/proxy/l7"
	"github.com/fleetlb/fleetlb/internal/proxy/upstream"
)

// dataPlane wires the cluster manager and the HTTP listeners into the proxy core.
func dataPlane(log logr.Logger) (proxy.Options, func(), error) {
	m := upstream.NewManager(log.WithName("upstream"))
	return proxy.Options{
		Clusters:               m,
		ValidateCluster:        upstream.ValidateCluster,
		ValidateLoadAssignment: upstream.ValidateLoadAssignment,
		HTTP:                   &httpListeners{up: m, routes: map[string]*l7.RouteTable{}, secrets: map[string]*tlsv3.Secret{}},
	}, m.Close, nil
}

// httpListeners holds the compiled RDS and SDS sets that l7 listeners look up per
// request and per handshake.
type httpListeners struct {
	up      l7.Upstreams
	mu      sync.RWMutex
	routes  map[string]*l7.RouteTable
	secrets map[string]*tlsv3.Secret
}

func (h *httpListeners) IsHTTPListener(l *listenerv3.Listener) bool { return l7.IsHTTPListener(l) }
func (h *httpListeners) RouteConfigNames(l *listenerv3.Listener) []string {
	return l7.RouteConfigNames(l)
}
func (h *httpListeners) SecretNames(l *listenerv3.Listener) []string { return l7.SecretNames(l) }

func (h *httpListeners) SetRouteConfigs(rcs []*routev3.RouteConfiguration) error {
	next := make(map[string]*l7.RouteTable, len(rcs))
	for _, rc := range rcs {
		rt, err := l7.CompileRouteConfig(rc)
		if err != nil {
			return err
		}
		next[rc.GetName()] = rt
	}
	h.mu.Lock()
	h.routes = next
	h.mu.Unlock()
	return nil
}

func (h *httpListeners) SetSecrets(ss []*tlsv3.Secret) error {
	next := make(map[string]*tlsv3.Secret, len(ss))
	for _, s := range ss {
		if err := l7.ValidateSecret(s); err != nil {
			return fmt.Errorf("secret %q: %w", s.GetName(), err)
		}
		next[s.GetName()] = s
	}
	h.mu.Lock()
	h.secrets = next
	h.mu.Unlock()
	return nil
}

func (h *httpListeners) route(name string) *l7.RouteTable {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.routes[name]
}

func (h *httpListeners) secret(name string) *tlsv3.Secret {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.secrets[name]
}

func (h *httpListeners) NewListener(l *listenerv3.Listener, log logr.Logger) (proxy.Server, error) {
	return l7.NewListener(l, l7.Deps{Routes: h.route, Secrets: h.secret, Upstreams: h.up}, log)
}
