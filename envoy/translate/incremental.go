package translate

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/fleetlb/fleetlb/internal/model"
)

// Incremental translates the successive models of one fleet, reusing the
// resources of the model parts that did not change since the previous call:
// an unchanged part gives the very same resource (the same pointer), which the
// xDS server then neither validates nor hashes again, and delta xDS does not
// push. Its output and errors equal Translate's for the same model; only the
// work differs. The models handed to it must not be modified afterwards (it
// keeps them to compare with). Not safe for concurrent use.
type Incremental struct {
	call     uint64 // numbers the calls, to find memos no longer used
	backends map[string]*backendMemo
	l4       map[l4Key]*l4Memo
	vhosts   map[string]*vhostMemo
	certs    map[string]*certMemo
	httpRC   *rcMemo
	httpsRCs map[string]*rcMemo
	httpL    *listenerMemo
	httpsL   *listenerMemo
	chains   map[string]*chainMemo
	valid    validMemo
	gateways map[string]types.Resource // the last Gateway resources by type and name
	last     *Output
	// What the last model's L4 services and HTTP side made: the same slices
	// again (models are never modified once handed over) make the same
	// resources, without a look at each part.
	lastL4 *l4Output
	lastL7 *l7Output
}

type l4Output struct {
	l4        sliceID
	listeners []namedResource
}

type l7Output struct {
	vhosts, certs sliceID
	http, https   *model.SharedListener
	out           *l7Resources
}

func sameListener(a, b *model.SharedListener) bool {
	return (a == nil) == (b == nil) && (a == nil || *a == *b)
}

type backendMemo struct {
	b      model.Backend
	c, cla types.Resource
	mark   uint64 // the call that last used it
}

type l4Key struct {
	proto model.Protocol
	vip   netip.Addr
	port  uint16
}

type l4Memo struct {
	s        model.L4Service
	affinity bool
	name     string
	res      types.Resource
	mark     uint64
}

type namedResource struct {
	name string
	res  types.Resource
}

// sortedByName is the resources in name order, as Translate lists them.
func sortedByName(rs []namedResource) []types.Resource {
	byName := func(a, b namedResource) int { return strings.Compare(a.name, b.name) }
	if !slices.IsSortedFunc(rs, byName) {
		slices.SortFunc(rs, byName)
	}
	out := make([]types.Resource, len(rs))
	for i := range rs {
		out[i] = rs[i].res
	}
	return out
}

type vhostMemo struct {
	v               model.VirtualHost
	plain, redirect *routev3.VirtualHost
	redirectPort    uint16 // the HTTPS port redirect was built for
	mark            uint64
}

type certMemo struct {
	c      model.Certificate
	secret types.Resource
}

type rcMemo struct {
	vhosts []*routev3.VirtualHost
	rc     *routev3.RouteConfiguration
}

type listenerMemo struct {
	at     model.SharedListener
	chains []*listenerv3.FilterChain
	l      *listenerv3.Listener
}

type chainMemo struct {
	names []string
	chain *listenerv3.FilterChain
}

// Translate returns f's resources, as the package's Translate does, and
// whether any resource differs from the previous call's.
func (x *Incremental) Translate(f *model.Fleet) (*Output, bool, error) {
	var backends map[string]*model.Backend
	if x.valid.check(f) {
		backends = x.valid.byName
	} else if err := f.Validate(); err != nil {
		// The authoritative check, with Translate's messages.
		return nil, true, fmt.Errorf("invalid fleet model: %w", err)
	}
	out, err := x.translate(f, backends)
	if err != nil {
		// Resources were built but not all checked: build everything again next time.
		*x = Incremental{valid: x.valid}
		return nil, true, err
	}
	changed := x.last == nil || !sameOutput(x.last, out)
	if !changed {
		out = x.last
	}
	x.last = out
	return out, changed, nil
}

// Last is the output of the last successful call (nil before one).
func (x *Incremental) Last() *Output { return x.last }

func sameOutput(a, b *Output) bool {
	same := func(x, y []types.Resource) bool {
		return slices.Equal(x, y) // the same resources, by identity
	}
	return same(a.Listeners, b.Listeners) && same(a.Routes, b.Routes) && same(a.Clusters, b.Clusters) &&
		same(a.Endpoints, b.Endpoints) && same(a.Secrets, b.Secrets)
}

// translate builds f's resources; backends is f's backends by name, or nil.
func (x *Incremental) translate(f *model.Fleet, backends map[string]*model.Backend) (*Output, error) {
	out := &Output{}
	var errs []error
	var fresh []types.Resource // built now: validated below

	x.call++
	index := backends == nil
	if index {
		backends = make(map[string]*model.Backend, len(f.Backends))
	}
	if x.backends == nil {
		x.backends, x.l4 = map[string]*backendMemo{}, map[l4Key]*l4Memo{}
	}
	clusters := make([]namedResource, 0, len(f.Backends))
	endpoints := make([]namedResource, 0, len(f.Backends))
	affinityChanged := false // a backend came, went or changed its session affinity (L4 listeners use it)
	for i := range f.Backends {
		b := &f.Backends[i]
		if index {
			backends[b.Name] = b
		}
		m := x.backends[b.Name]
		if m == nil || !m.b.Equal(b) {
			if m == nil || m.b.SessionAffinity != b.SessionAffinity {
				affinityChanged = true
			}
			c, cla, err := cluster(b)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			next := &backendMemo{b: *b, c: c, cla: cla}
			// A node change alters endpoints, not the cluster: keep what is equal.
			if m != nil && proto.Equal(m.c, c) {
				next.c = m.c
			} else {
				fresh = append(fresh, c)
			}
			if m != nil && proto.Equal(m.cla, cla) {
				next.cla = m.cla
			} else {
				fresh = append(fresh, cla)
			}
			m = next
			x.backends[b.Name] = m
		}
		m.mark = x.call
		clusters = append(clusters, namedResource{b.Name, m.c})
		endpoints = append(endpoints, namedResource{b.Name, m.cla})
	}

	// Backends no longer used are dropped below: they were marked by an earlier call.
	if len(x.backends) != len(f.Backends) {
		affinityChanged = true
	}
	l4Seen := affinityChanged || x.lastL4 == nil || x.lastL4.l4 != idOf(f.L4)
	var listeners []namedResource
	if !l4Seen {
		listeners = slices.Grow(slices.Clone(x.lastL4.listeners), 2)
	} else {
		listeners = make([]namedResource, 0, len(f.L4)+2)
	}
	for i := range f.L4 {
		if !l4Seen {
			break
		}
		s := &f.L4[i]
		b := backends[s.Backend]
		key := l4Key{s.Protocol, s.VIP, s.Port}
		m := x.l4[key]
		if m == nil || m.affinity != b.SessionAffinity || !m.s.Equal(s) {
			l, err := l4Listener(s, b)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			m = &l4Memo{s: *s, affinity: b.SessionAffinity, res: l, name: l.Name}
			fresh = append(fresh, l)
			x.l4[key] = m
		}
		m.mark = x.call
		listeners = append(listeners, namedResource{m.name, m.res})
	}
	// Only what this model used is kept (L4 services not looked at are last time's).
	maps.DeleteFunc(x.backends, func(_ string, m *backendMemo) bool { return m.mark != x.call })
	if l4Seen {
		maps.DeleteFunc(x.l4, func(_ l4Key, m *l4Memo) bool { return m.mark != x.call })
		x.lastL4 = &l4Output{l4: idOf(f.L4), listeners: slices.Clip(slices.Clone(listeners))}
	}

	l7, built := x.httpResources(f)
	fresh = append(fresh, built...)
	gw, err := x.gatewayResources(f, l7)
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err // a translator bug
	}
	for _, r := range slices.Concat(l7.listeners, gw.listeners) {
		listeners = append(listeners, namedResource{nameOf(r), r})
	}
	out.Listeners, out.Clusters, out.Endpoints = sortedByName(listeners), sortedByName(clusters), sortedByName(endpoints)
	// Few: route configurations and secrets.
	out.Routes, out.Secrets = slices.Concat(l7.routes, gw.routes), slices.Concat(l7.secrets, gw.secrets)
	for _, list := range [][]types.Resource{out.Routes, out.Secrets} {
		slices.SortFunc(list, func(a, b types.Resource) int { return cmp.Compare(nameOf(a), nameOf(b)) })
	}
	// Only what was built now is validated: a route configuration's own
	// fields (it has no rule on its list) and its new virtual hosts.
	for _, r := range fresh {
		if rc, ok := r.(*routev3.RouteConfiguration); ok {
			r = &routev3.RouteConfiguration{Name: rc.Name}
		}
		if v, ok := r.(interface{ Validate() error }); ok && v.Validate() != nil {
			// A translator bug: word it as Translate does.
			for _, list := range [][]types.Resource{out.Listeners, out.Routes, out.Clusters, out.Endpoints, out.Secrets} {
				for _, r := range list {
					if v, ok := r.(interface{ Validate() error }); ok {
						if err := v.Validate(); err != nil {
							errs = append(errs, fmt.Errorf("%s: %w", nameOf(r), err))
						}
					}
				}
			}
			return nil, fmt.Errorf("generated resources are invalid (a translator bug): %w", errors.Join(errs...))
		}
	}
	return out, nil
}

// httpResources is httpResources of the package, reusing virtual hosts,
// route configurations, secrets, filter chains and listeners whose inputs
// did not change. It returns the resources it had to build.
func (x *Incremental) httpResources(f *model.Fleet) (*l7Resources, []types.Resource) {
	// Virtual hosts, certificates and listeners as last time: the same resources.
	if p := x.lastL7; p != nil && p.vhosts == idOf(f.VirtualHosts) && p.certs == idOf(f.Certificates) &&
		sameListener(p.http, f.HTTP) && sameListener(p.https, f.HTTPS) {
		return p.out, nil
	}
	x.lastL7 = nil
	out, built := x.buildHTTP(f)
	x.lastL7 = &l7Output{vhosts: idOf(f.VirtualHosts), certs: idOf(f.Certificates), http: f.HTTP, https: f.HTTPS, out: out}
	return out, built
}

func (x *Incremental) buildHTTP(f *model.Fleet) (*l7Resources, []types.Resource) {
	out := &l7Resources{}
	var built []types.Resource
	vhosts := slices.Clone(f.VirtualHosts)
	slices.SortFunc(vhosts, func(a, b model.VirtualHost) int { return cmp.Compare(a.Name, b.Name) })
	if x.vhosts == nil {
		x.vhosts = map[string]*vhostMemo{}
	}
	memo := func(v *model.VirtualHost) *vhostMemo {
		m := x.vhosts[v.Name]
		if m == nil || (m.mark != x.call && !m.v.Equal(v)) {
			m = &vhostMemo{v: *v}
			x.vhosts[v.Name] = m
		}
		m.mark = x.call
		return m
	}

	if f.HTTP != nil {
		var list []*routev3.VirtualHost
		for i := range vhosts {
			v := &vhosts[i]
			m := memo(v)
			if v.Certificate != "" && v.RedirectToHTTPS {
				if m.redirect == nil || m.redirectPort != httpsPort(f) {
					m.redirect, m.redirectPort = httpsRedirectHost(v, httpsPort(f)), httpsPort(f)
					built = append(built, m.redirect)
				}
				list = append(list, m.redirect)
				continue
			}
			if m.plain == nil {
				m.plain = virtualHost(v)
				built = append(built, m.plain)
			}
			list = append(list, m.plain)
		}
		rc := x.routeConfig(x.httpRC, HTTPRouteName, list, &built)
		x.httpRC = &rcMemo{vhosts: list, rc: rc}
		out.routes = append(out.routes, rc)
		if x.httpL == nil || x.httpL.at != *f.HTTP {
			l := &listenerv3.Listener{
				Name:                          HTTPListenerName,
				Address:                       socketAddress(f.HTTP.VIP, f.HTTP.Port, false),
				FilterChains:                  []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{hcm(HTTPListenerName, HTTPRouteName)}}},
				PerConnectionBufferLimitBytes: wrapperspb.UInt32(connectionBufferLimit),
			}
			x.httpL = &listenerMemo{at: *f.HTTP, l: l}
			built = append(built, l)
		}
		out.listeners = append(out.listeners, x.httpL.l)
	} else {
		x.httpRC, x.httpL = nil, nil
	}

	nextRC := map[string]*rcMemo{}
	nextCerts := map[string]*certMemo{}
	nextChains := map[string]*chainMemo{}
	if f.HTTPS != nil {
		serverNames := map[string][]string{}
		lists := map[string][]*routev3.VirtualHost{}
		for i := range vhosts {
			v := &vhosts[i]
			if v.Certificate == "" {
				continue
			}
			serverNames[v.Certificate] = append(serverNames[v.Certificate], v.Hostnames...)
			m := memo(v)
			if m.plain == nil {
				m.plain = virtualHost(v)
				built = append(built, m.plain)
			}
			lists[v.Certificate] = append(lists[v.Certificate], m.plain)
		}
		certs := slices.Clone(f.Certificates)
		slices.SortFunc(certs, func(a, b model.Certificate) int { return cmp.Compare(a.Name, b.Name) })
		var chains []*listenerv3.FilterChain
		for i := range certs {
			c := &certs[i]
			names := serverNames[c.Name]
			if len(names) == 0 {
				continue
			}
			slices.Sort(names)
			names = slices.Compact(names)
			cm := x.certs[c.Name]
			if cm == nil || cm.secret == nil || cm.c != *c {
				s := &tlsv3.Secret{Name: c.Name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
					CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte(c.CertPEM)}},
					PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte(c.KeyPEM)}},
				}}}
				cm = &certMemo{c: *c, secret: s}
				built = append(built, s)
			}
			nextCerts[c.Name] = cm
			out.secrets = append(out.secrets, cm.secret)
			rc := x.routeConfig(x.httpsRCs[c.Name], HTTPSRouteNameFor(c.Name), lists[c.Name], &built)
			nextRC[c.Name] = &rcMemo{vhosts: lists[c.Name], rc: rc}
			out.routes = append(out.routes, rc)
			ch := x.chains[c.Name]
			if ch == nil || !slices.Equal(ch.names, names) {
				ch = &chainMemo{names: names, chain: &listenerv3.FilterChain{
					Name:             c.Name,
					FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: names},
					TransportSocket: &corev3.TransportSocket{Name: TransportTLS, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: typed(&tlsv3.DownstreamTlsContext{
						CommonTlsContext: &tlsv3.CommonTlsContext{
							TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: c.Name, SdsConfig: adsSource()}},
							AlpnProtocols:                  []string{"h2", "http/1.1"},
						},
					})}},
					Filters: []*listenerv3.Filter{hcm(HTTPSListenerName, HTTPSRouteNameFor(c.Name))},
				}}
			}
			nextChains[c.Name] = ch
			chains = append(chains, ch.chain)
		}
		if len(chains) > 0 {
			if x.httpsL == nil || x.httpsL.at != *f.HTTPS || !slices.Equal(x.httpsL.chains, chains) {
				l := &listenerv3.Listener{
					Name:    HTTPSListenerName,
					Address: socketAddress(f.HTTPS.VIP, f.HTTPS.Port, false),
					ListenerFilters: []*listenerv3.ListenerFilter{{
						Name:       FilterTLSInspector,
						ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: typed(&tlsinspectorv3.TlsInspector{})},
					}},
					FilterChains:                  chains,
					PerConnectionBufferLimitBytes: wrapperspb.UInt32(connectionBufferLimit),
				}
				x.httpsL = &listenerMemo{at: *f.HTTPS, chains: chains, l: l}
				built = append(built, l)
			}
			out.listeners = append(out.listeners, x.httpsL.l)
		} else {
			x.httpsL = nil
		}
	} else {
		x.httpsL = nil
	}
	maps.DeleteFunc(x.vhosts, func(_ string, m *vhostMemo) bool { return m.mark != x.call })
	x.httpsRCs, x.certs, x.chains = nextRC, nextCerts, nextChains
	return out, built
}

// routeConfig is the previous route configuration when it holds the same
// virtual hosts (the same resources), a new one otherwise.
func (x *Incremental) routeConfig(prev *rcMemo, name string, vhosts []*routev3.VirtualHost, built *[]types.Resource) *routev3.RouteConfiguration {
	if prev != nil && prev.rc.GetName() == name && slices.Equal(prev.vhosts, vhosts) {
		return prev.rc
	}
	rc := &routev3.RouteConfiguration{Name: name, VirtualHosts: vhosts}
	*built = append(*built, rc)
	return rc
}

// gatewayResources are the tenant Gateways' listeners, route configurations
// and secrets (gatewayResources of the package). Gateways are few: they are
// built every time, but a resource equal to the last one of its name is that
// very resource, so the xDS server does not hash it again and delta xDS does
// not push it. What is new is validated whole.
func (x *Incremental) gatewayResources(f *model.Fleet, l7 *l7Resources) (*l7Resources, error) {
	if len(f.Gateways) == 0 {
		x.gateways = nil
		return &l7Resources{}, nil
	}
	emitted := map[string]bool{}
	for _, s := range l7.secrets {
		emitted[nameOf(s)] = true
	}
	gw := gatewayResources(f, emitted)
	prev, next := x.gateways, make(map[string]types.Resource, len(x.gateways))
	var errs []error
	for _, list := range [][]types.Resource{gw.listeners, gw.routes, gw.secrets} {
		for i, r := range list {
			key := fmt.Sprintf("%T/%s", r, nameOf(r))
			if old, ok := prev[key]; ok && proto.Equal(old, r) {
				list[i] = old
			} else if v, ok := r.(interface{ Validate() error }); ok {
				if err := v.Validate(); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", nameOf(r), err))
				}
			}
			next[key] = list[i]
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("generated resources are invalid (a translator bug): %w", err)
	}
	x.gateways = next
	return gw, nil
}
