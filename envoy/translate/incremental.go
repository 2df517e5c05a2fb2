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
	// The last model's backends and their memos (in the same order): a
	// backend that is the very same value again (models are never modified
	// once handed over) has the same resources, without a look inside.
	lastB         []model.Backend
	lastBM        []*backendMemo
	lastClusters  []types.Resource // what lastB made, in its order
	lastEndpoints []types.Resource
	// What the last model's L4 services and HTTP side made: the same slices
	// again make the same resources, without a look at each part.
	lastL4 *l4Output
	lastL7 *l7Output
	// The last model's virtual hosts and their memos (in the same order).
	lastVH  []model.VirtualHost
	lastVHM []*vhostMemo
}

type l4Output struct {
	l4        sliceID
	svcs      []model.L4Service // the services (nil when not in backend order)
	listeners []namedResource   // in name order
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
	if !x.valid.check(f) {
		if err := f.Validate(); err != nil {
			// The authoritative check, with Translate's messages.
			return nil, true, fmt.Errorf("invalid fleet model: %w", err)
		}
	}
	out, err := x.translate(f)
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

// translate builds f's resources.
func (x *Incremental) translate(f *model.Fleet) (*Output, error) {
	out := &Output{}
	var errs []error
	var fresh []types.Resource // built now: validated below

	x.call++
	if x.backends == nil {
		x.backends, x.l4 = map[string]*backendMemo{}, map[l4Key]*l4Memo{}
	}
	var clusters, endpoints []types.Resource
	var memos []*backendMemo
	// Backends that came, went or changed session affinity (L4 listeners use it).
	affinity := map[string]bool{}
	// memo is the memo of b, built again when b changed.
	memo := func(b *model.Backend) *backendMemo {
		m := x.backends[b.Name]
		if m == nil || !m.b.Equal(b) {
			if m == nil || m.b.SessionAffinity != b.SessionAffinity {
				affinity[b.Name] = true
			}
			c, cla, err := cluster(b)
			if err != nil {
				errs = append(errs, err)
				return nil
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
		return m
	}
	sameBackends := x.lastB != nil && idOf(x.lastB) == idOf(f.Backends)
	sorted := sameBackends || strictlySorted(f.Backends, backendKey)
	if !sameBackends {
		clusters, endpoints = make([]types.Resource, len(f.Backends)), make([]types.Resource, len(f.Backends))
		memos = make([]*backendMemo, len(f.Backends))
	}
	switch {
	case sameBackends:
		// The very same backends (the slice of the last model): the same resources.
		clusters, endpoints, memos = x.lastClusters, x.lastEndpoints, x.lastBM
	case sorted && x.lastB != nil:
		prev := x.lastB
		pair(prev, f.Backends, backendKey, func(i, j int) bool {
			switch {
			case j < 0:
				delete(x.backends, prev[i].Name)
				affinity[prev[i].Name] = true
			case i >= 0 && sameBackend(&prev[i], &f.Backends[j]):
				memos[j] = x.lastBM[i]
			default:
				memos[j] = memo(&f.Backends[j])
			}
			return true
		})
	default:
		for j := range f.Backends {
			if memos[j] = memo(&f.Backends[j]); memos[j] != nil {
				memos[j].mark = x.call
			}
		}
		// Backends no longer used were marked by an earlier call.
		maps.DeleteFunc(x.backends, func(name string, m *backendMemo) bool {
			if m.mark != x.call {
				affinity[name] = true
				return true
			}
			return false
		})
	}
	if !sameBackends {
		for j, m := range memos {
			if m != nil {
				clusters[j], endpoints[j] = m.c, m.cla
			}
		}
	}
	x.lastB, x.lastBM, x.lastClusters, x.lastEndpoints = nil, nil, nil, nil
	if sorted && len(errs) == 0 {
		x.lastB, x.lastBM, x.lastClusters, x.lastEndpoints = f.Backends, memos, clusters, endpoints
		if x.lastB == nil {
			x.lastB = []model.Backend{} // none is a model too (not "no last model")
		}
	}
	backend := func(name string) *model.Backend {
		if m := x.backends[name]; m != nil {
			return &m.b
		}
		return nil
	}

	listeners, err := x.l4Listeners(f, affinity, backend, &fresh)
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...) // a translator bug
	}
	if !sorted {
		cs, es := make([]namedResource, len(memos)), make([]namedResource, len(memos))
		for j, m := range memos {
			cs[j], es[j] = namedResource{f.Backends[j].Name, m.c}, namedResource{f.Backends[j].Name, m.cla}
		}
		clusters, endpoints = sortedByName(cs), sortedByName(es)
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
	var others []namedResource
	for _, r := range slices.Concat(l7.listeners, gw.listeners) {
		others = append(others, namedResource{nameOf(r), r})
	}
	out.Listeners, out.Clusters, out.Endpoints = mergeNamed(listeners, others), clusters, endpoints
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

// l4Listeners are the L4 services' listeners in name order, reusing those
// of services (and their backends' session affinity) that did not change.
// affinity names the backends that came, went or changed session affinity.
func (x *Incremental) l4Listeners(f *model.Fleet, affinity map[string]bool, backend func(string) *model.Backend, fresh *[]types.Resource) ([]namedResource, error) {
	last := x.lastL4
	if last != nil && last.l4 == idOf(f.L4) && len(affinity) == 0 {
		return last.listeners, nil
	}
	var errs []error
	// listener is the memo of s, built again when s or its backend's affinity changed.
	listener := func(s *model.L4Service) *l4Memo {
		b := backend(s.Backend)
		key := l4Key{s.Protocol, s.VIP, s.Port}
		m := x.l4[key]
		if m == nil || m.affinity != b.SessionAffinity || !m.s.Equal(s) {
			l, err := l4Listener(s, b)
			if err != nil {
				errs = append(errs, err)
				return nil
			}
			m = &l4Memo{s: *s, affinity: b.SessionAffinity, res: l, name: l.Name}
			*fresh = append(*fresh, l)
			x.l4[key] = m
		}
		return m
	}
	// In strict backend order (services that share a backend are looked at as before).
	inOrder := strictlySorted(f.L4, serviceKey)
	if last != nil && last.svcs != nil && inOrder {
		// Only the services that changed, and those of backends whose affinity changed.
		prev := last.svcs
		touched := map[string]*namedResource{} // listener name → its resource now (nil: gone)
		var check []int
		pair(prev, f.L4, serviceKey, func(i, j int) bool {
			if i >= 0 && j >= 0 && !affinity[f.L4[j].Backend] && prev[i].Equal(&f.L4[j]) {
				return true
			}
			if i >= 0 && (j < 0 || l4KeyOf(&prev[i]) != l4KeyOf(&f.L4[j])) {
				key := l4KeyOf(&prev[i])
				if m := x.l4[key]; m != nil {
					if _, ok := touched[m.name]; !ok {
						touched[m.name] = nil
					}
					delete(x.l4, key)
				}
			}
			if j >= 0 {
				check = append(check, j)
			}
			return true
		})
		for name := range affinity {
			if j := hasKey(f.L4, name); j >= 0 && !slices.Contains(check, j) {
				check = append(check, j)
			}
		}
		for _, j := range check {
			if m := listener(&f.L4[j]); m != nil {
				touched[m.name] = &namedResource{m.name, m.res}
			}
		}
		if len(errs) > 0 {
			x.lastL4 = nil
			return nil, errors.Join(errs...)
		}
		listeners := patchNamed(last.listeners, touched)
		x.lastL4 = &l4Output{l4: idOf(f.L4), svcs: f.L4, listeners: listeners}
		return listeners, nil
	}
	listeners := make([]namedResource, 0, len(f.L4))
	seen := make(map[l4Key]bool, len(f.L4))
	for i := range f.L4 {
		s := &f.L4[i]
		if m := listener(s); m != nil {
			seen[l4KeyOf(s)] = true
			listeners = append(listeners, namedResource{m.name, m.res})
		}
	}
	if len(errs) > 0 {
		x.lastL4 = nil
		return nil, errors.Join(errs...)
	}
	maps.DeleteFunc(x.l4, func(k l4Key, _ *l4Memo) bool { return !seen[k] })
	listeners = slices.Clip(listeners)
	slices.SortFunc(listeners, func(a, b namedResource) int { return strings.Compare(a.name, b.name) })
	var svcs []model.L4Service
	if inOrder {
		svcs = f.L4
		if svcs == nil {
			svcs = []model.L4Service{}
		}
	}
	x.lastL4 = &l4Output{l4: idOf(f.L4), svcs: svcs, listeners: listeners}
	return listeners, nil
}

// patchNamed is rs (in name order) with the resources named in touched
// replaced (dropped where nil); rs is not modified.
func patchNamed(rs []namedResource, touched map[string]*namedResource) []namedResource {
	if len(touched) == 0 {
		return rs
	}
	names := slices.Sorted(maps.Keys(touched))
	out := make([]namedResource, 0, len(rs)+len(names))
	k := 0
	for _, r := range rs {
		for k < len(names) && names[k] < r.name {
			if t := touched[names[k]]; t != nil {
				out = append(out, *t)
			}
			k++
		}
		if _, ok := touched[r.name]; ok {
			continue
		}
		out = append(out, r)
	}
	for ; k < len(names); k++ {
		if t := touched[names[k]]; t != nil {
			out = append(out, *t)
		}
	}
	return slices.Clip(out)
}

// mergeNamed is the resources of a (in name order) and of b (few, any order) in name order.
func mergeNamed(a, b []namedResource) []types.Resource {
	slices.SortFunc(b, func(x, y namedResource) int { return strings.Compare(x.name, y.name) })
	out := make([]types.Resource, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if b[0].name < a[0].name {
			out, b = append(out, b[0].res), b[1:]
		} else {
			out, a = append(out, a[0].res), a[1:]
		}
	}
	for _, r := range a {
		out = append(out, r.res)
	}
	for _, r := range b {
		out = append(out, r.res)
	}
	return out
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
	vhosts := f.VirtualHosts
	sorted := strictlySorted(vhosts, vhostKey)
	if !sorted {
		vhosts = slices.Clone(f.VirtualHosts)
		slices.SortFunc(vhosts, func(a, b model.VirtualHost) int { return cmp.Compare(a.Name, b.Name) })
	}
	if x.vhosts == nil {
		x.vhosts = map[string]*vhostMemo{}
	}
	// The memo of each virtual host: the last one's when it is the very same
	// value (found by walking both lists in name order), else by name.
	memos := make([]*vhostMemo, len(vhosts))
	lookup := func(v *model.VirtualHost) *vhostMemo {
		m := x.vhosts[v.Name]
		if m == nil || !m.v.Equal(v) {
			m = &vhostMemo{v: *v}
			x.vhosts[v.Name] = m
		}
		return m
	}
	if sorted && x.lastVH != nil {
		prev := x.lastVH
		pair(prev, vhosts, vhostKey, func(i, j int) bool {
			switch {
			case j < 0:
				delete(x.vhosts, prev[i].Name)
			case i >= 0 && sameVirtualHost(&prev[i], &vhosts[j]):
				memos[j] = x.lastVHM[i]
			default:
				memos[j] = lookup(&vhosts[j])
			}
			return true
		})
	} else {
		seen := make(map[string]bool, len(vhosts))
		for j := range vhosts {
			memos[j] = lookup(&vhosts[j])
			seen[vhosts[j].Name] = true
		}
		maps.DeleteFunc(x.vhosts, func(name string, _ *vhostMemo) bool { return !seen[name] })
	}
	x.lastVH, x.lastVHM = nil, nil
	if sorted {
		x.lastVH, x.lastVHM = f.VirtualHosts, memos
		if x.lastVH == nil {
			x.lastVH = []model.VirtualHost{}
		}
	}
	memo := func(i int) *vhostMemo { return memos[i] }

	if f.HTTP != nil {
		var list []*routev3.VirtualHost
		for i := range vhosts {
			v := &vhosts[i]
			m := memo(i)
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
			m := memo(i)
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
