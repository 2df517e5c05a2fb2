package l7

import (
	"crypto/tls"
	"maps"
	"slices"
	"sync"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/go-logr/logr"

	"github.com/fleetlb/fleetlb/internal/proxy"
)

// Set is the proxy's HTTP side (proxy.HTTPListeners): it holds the compiled RDS
// and SDS sets that its listeners look up per request and per handshake.
type Set struct {
	up      Upstreams
	mu      sync.RWMutex
	routes  map[string]*RouteTable
	secrets map[string]*tls.Certificate

	// Route updates one at a time: what each route configuration received
	// encoded was compiled from, for the next one.
	routeUpdates sync.Mutex
	routeStates  map[string]*routeState
}

var (
	_ proxy.HTTPListeners       = (*Set)(nil)
	_ proxy.EncodedRouteConfigs = (*Set)(nil)
)

// NewSet returns an empty set forwarding to up.
func NewSet(up Upstreams) *Set {
	return &Set{up: up, routes: map[string]*RouteTable{}, secrets: map[string]*tls.Certificate{}, routeStates: map[string]*routeState{}}
}

func (s *Set) IsHTTPListener(l *listenerv3.Listener) bool       { return IsHTTPListener(l) }
func (s *Set) RouteConfigNames(l *listenerv3.Listener) []string { return RouteConfigNames(l) }
func (s *Set) SecretNames(l *listenerv3.Listener) []string      { return SecretNames(l) }

// SetRouteConfigs compiles the complete RDS set; on any error nothing changes.
func (s *Set) SetRouteConfigs(rcs []*routev3.RouteConfiguration) error {
	s.routeUpdates.Lock()
	defer s.routeUpdates.Unlock()
	next, err := compileRouteConfigs(rcs, nil)
	if err != nil {
		return err
	}
	clear(s.routeStates)
	s.mu.Lock()
	s.routes = next
	s.mu.Unlock()
	return nil
}

// UpdateRouteConfigs compiles the changed route configurations and drops the
// removed ones; on any error nothing changes.
func (s *Set) UpdateRouteConfigs(changed []*routev3.RouteConfiguration, removed []string) error {
	s.routeUpdates.Lock()
	defer s.routeUpdates.Unlock()
	s.mu.RLock()
	cur := s.routes
	s.mu.RUnlock()
	next, err := compileRouteConfigs(changed, cur)
	if err != nil {
		return err
	}
	for _, rc := range changed {
		delete(s.routeStates, rc.GetName())
	}
	for _, n := range removed {
		delete(next, n)
		delete(s.routeStates, n)
	}
	s.mu.Lock()
	s.routes = next
	s.mu.Unlock()
	return nil
}

// UpdateEncodedRouteConfigs compiles the changed route configurations from
// their encoding, each over what its previous version was compiled to, and
// drops the removed ones; on any error nothing changes.
func (s *Set) UpdateEncodedRouteConfigs(changed map[string][]byte, removed []string) error {
	s.routeUpdates.Lock()
	defer s.routeUpdates.Unlock()
	pending := make(map[string]*pendingRoute, len(changed))
	for _, name := range slices.Sorted(maps.Keys(changed)) {
		p, err := compileEncoded(name, changed[name], s.routeStates[name])
		if err != nil {
			return err
		}
		pending[name] = p
	}
	s.mu.RLock()
	next := maps.Clone(s.routes)
	s.mu.RUnlock()
	for name, p := range pending {
		if p.fullCompileTable != nil {
			next[name] = p.fullCompileTable
			delete(s.routeStates, name)
			continue
		}
		p.commit()
		next[name] = p.state.table
		s.routeStates[name] = p.state
	}
	for _, n := range removed {
		delete(next, n)
		delete(s.routeStates, n)
	}
	s.mu.Lock()
	s.routes = next
	s.mu.Unlock()
	return nil
}

// compileRouteConfigs is base (not modified) with rcs compiled over it.
func compileRouteConfigs(rcs []*routev3.RouteConfiguration, base map[string]*RouteTable) (map[string]*RouteTable, error) {
	next := make(map[string]*RouteTable, len(base)+len(rcs))
	maps.Copy(next, base)
	for _, rc := range rcs {
		rt, err := CompileRouteConfig(rc)
		if err != nil {
			return nil, err
		}
		next[rc.GetName()] = rt
	}
	return next, nil
}

// SetSecrets parses the complete SDS set; on any error nothing changes. New
// handshakes use the new certificates; established connections keep theirs.
func (s *Set) SetSecrets(ss []*tlsv3.Secret) error {
	next, err := parseSecrets(ss, nil)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.secrets = next
	s.mu.Unlock()
	return nil
}

// UpdateSecrets parses the changed secrets and drops the removed ones; on any
// error nothing changes.
func (s *Set) UpdateSecrets(changed []*tlsv3.Secret, removed []string) error {
	s.mu.RLock()
	cur := s.secrets
	s.mu.RUnlock()
	next, err := parseSecrets(changed, cur)
	if err != nil {
		return err
	}
	for _, n := range removed {
		delete(next, n)
	}
	s.mu.Lock()
	s.secrets = next
	s.mu.Unlock()
	return nil
}

func parseSecrets(ss []*tlsv3.Secret, base map[string]*tls.Certificate) (map[string]*tls.Certificate, error) {
	next := make(map[string]*tls.Certificate, len(base)+len(ss))
	maps.Copy(next, base)
	for _, sec := range ss {
		c, err := ParseSecret(sec)
		if err != nil {
			return nil, err
		}
		next[sec.GetName()] = c
	}
	return next, nil
}

func (s *Set) route(name string) *RouteTable {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.routes[name]
}

func (s *Set) secret(name string) *tls.Certificate {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.secrets[name]
}

// NewListener validates l and returns its server.
func (s *Set) NewListener(l *listenerv3.Listener, log logr.Logger) (proxy.Server, error) {
	return NewListener(l, Deps{Routes: s.route, Secrets: s.secret, Upstreams: s.up}, log)
}
