package server

import (
	"cmp"
	"context"
	"maps"
	"reflect"
	"slices"
	"sync/atomic"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// The cache go-control-plane's protocol server asks for responses.
//
// Delta streams are answered from what changed: every served change of a
// type is numbered (seq) and logged by name, and each delta subscription
// remembers up to which number the versions it was sent are those served.
// A watch is then answered by looking at the names logged since, and those
// the request (un)subscribes, not at every resource of the type. The
// subscription's map of versions sent (go-control-plane's returned
// resources) is kept up to date in place and handed back as the response's
// next map, so no response copies it.
//
// State-of-the-world streams, which get every resource of a type in each
// response anyway, are served by go-control-plane's snapshot cache from a
// snapshot built only while the fleet has such streams (O(resources) per
// change for them; fleetlb-proxy and Envoy as deployed use delta).

// item is one served resource.
type item struct {
	res     types.Resource
	version string    // content hash
	wire    *wireForm // its wire form when known (the big route configurations); else marshalled when pushed
}

// logged is a name whose served resource changed (or went) at seq.
type logged struct {
	seq  uint64
	name string
}

// typeResources is what a fleet is served of one type.
type typeResources struct {
	items map[string]*item
	seq   uint64 // numbers the served changes of this type
	// log holds every change with a number above logFrom, in order.
	log     []logged
	logFrom uint64
	// sotw is the items as a state-of-the-world snapshot has them, as of
	// sotwSeq; never modified once handed to one.
	sotw    map[string]types.ResourceWithTTL
	sotwSeq uint64
}

// sotwItems is ts.items as a snapshot takes them: the last one's if the type
// did not change since, else a copy of it with the logged changes.
func (ts *typeResources) sotwItems() map[string]types.ResourceWithTTL {
	switch {
	case ts.sotw != nil && ts.sotwSeq == ts.seq:
		return ts.sotw
	case ts.sotw != nil && ts.sotwSeq >= ts.logFrom:
		m := maps.Clone(ts.sotw)
		i, _ := slices.BinarySearchFunc(ts.log, ts.sotwSeq+1, func(l logged, seq uint64) int { return cmp.Compare(l.seq, seq) })
		for _, l := range ts.log[i:] {
			if it := ts.items[l.name]; it != nil {
				m[l.name] = types.ResourceWithTTL{Resource: it.res}
			} else {
				delete(m, l.name)
			}
		}
		ts.sotw = m
	default:
		ts.sotw = make(map[string]types.ResourceWithTTL, len(ts.items))
		for name, it := range ts.items {
			ts.sotw[name] = types.ResourceWithTTL{Resource: it.res}
		}
	}
	ts.sotwSeq = ts.seq
	return ts.sotw
}

// fleetState is what a fleet is served, and the delta watches waiting for a change.
type fleetState struct {
	served  bool
	types   map[string]*typeResources
	watches map[*deltaWatch]bool
	// sotwVersion is the version of the snapshot the state-of-the-world cache has, if any.
	sotwVersion string
}

func (s *Server) fleetState(fleet string) *fleetState {
	fs := s.fleets[fleet]
	if fs == nil {
		fs = &fleetState{types: map[string]*typeResources{}, watches: map[*deltaWatch]bool{}}
		for _, typ := range xdsTypes {
			fs.types[typ] = &typeResources{items: map[string]*item{}}
		}
		s.fleets[fleet] = fs
	}
	return fs
}

// deltaSync is, for one delta stream and type, what the stream was sent.
type deltaSync struct {
	// known is the subscription's returned resources (name → version sent),
	// which responses update in place.
	known map[string]string
	// seq: for every name not logged after seq, known holds the served
	// version if the stream subscribes to it, and nothing otherwise.
	seq      uint64
	wildcard bool
}

type deltaWatch struct {
	req  *discoveryv3.DeltaDiscoveryRequest
	sub  cachev3.Subscription
	ch   chan cachev3.DeltaResponse
	sync *deltaSync
}

// maxLog bounds a type's change log: a subscription further behind is
// compared name by name, as on its first request.
func maxLog(items int) int { return max(minLog, items/4) }

var minLog = 1024 // tests make it small

// serve brings the fleet's served state to next's resources (only the names
// next.unserved lists are looked at), answers the delta watches those
// changes concern, updates what each delta proxy is missing, and sets a
// state-of-the-world snapshot if the fleet has such proxies. s.mu is held.
func (s *Server) serve(fleet string, next *fleetChecked) error {
	fs := s.fleetState(fleet)
	first := !fs.served
	fs.served = true
	changed := map[string][]string{}
	for _, typ := range xdsTypes {
		ts := fs.types[typ]
		byName := next.types[typ].byName
		seq := ts.seq + 1
		for name := range next.unserved[typ] {
			c, ok := byName[name]
			old := ts.items[name]
			switch {
			case !ok && old == nil:
				continue
			case !ok:
				delete(ts.items, name)
			case old != nil && old.version == c.hash:
				if old.res != c.res { // the same content: served as it is, but the old one need not stay
					ts.items[name] = &item{res: c.res, version: c.hash, wire: c.wire}
				}
				continue
			default:
				ts.items[name] = &item{res: c.res, version: c.hash, wire: c.wire}
			}
			changed[typ] = append(changed[typ], name)
		}
		if len(changed[typ]) == 0 {
			continue
		}
		ts.seq = seq
		if len(changed[typ]) > maxLog(len(ts.items)) {
			// A change of (almost) everything: compared name by name.
			ts.log, ts.logFrom = ts.log[:0], seq
			continue
		}
		for _, name := range changed[typ] {
			ts.log = append(ts.log, logged{seq, name})
		}
		if n := len(ts.log) - maxLog(len(ts.items)); n > 0 {
			ts.logFrom = ts.log[n-1].seq
			ts.log = slices.Delete(ts.log, 0, n)
			for len(ts.log) > 0 && ts.log[0].seq <= ts.logFrom {
				ts.log = ts.log[1:]
			}
		}
	}
	// ADS order: clusters, endpoints, then listeners, routes, secrets.
	watches := make([]*deltaWatch, 0, len(fs.watches))
	for w := range fs.watches {
		if first || len(changed[w.req.GetTypeUrl()]) > 0 {
			watches = append(watches, w)
		}
	}
	slices.SortFunc(watches, func(a, b *deltaWatch) int {
		return int(cachev3.GetResponseType(a.req.GetTypeUrl())) - int(cachev3.GetResponseType(b.req.GetTypeUrl()))
	})
	for _, w := range watches {
		if resp := s.deltaResponse(fs, w, nil); resp != nil {
			delete(fs.watches, w)
			w.ch <- resp
		}
	}
	for _, st := range s.streams {
		if st.fleet != fleet || !st.delta {
			continue
		}
		for typ, names := range changed {
			if st.types[typ] {
				st.recheck(fs, typ, names)
			}
		}
	}
	if s.hasSotW(fleet) {
		return s.setSotW(fleet, fs)
	}
	return nil
}

func (s *Server) hasSotW(fleet string) bool {
	for _, st := range s.streams {
		if st.fleet == fleet && !st.delta {
			return true
		}
	}
	return false
}

// setSotW hands the state-of-the-world cache a snapshot of what the fleet
// is served, unless it has it already. s.mu is held.
func (s *Server) setSotW(fleet string, fs *fleetState) error {
	cur := s.serving[fleet]
	if !fs.served || cur == nil || fs.sotwVersion == cur.version {
		return nil
	}
	snap := &cachev3.Snapshot{}
	for typ, ts := range fs.types {
		snap.Resources[cachev3.GetResponseType(typ)] = cachev3.Resources{Version: cur.versions[typ], Items: ts.sotwItems()}
	}
	fs.sotwVersion = cur.version
	return s.sotw.SetSnapshot(context.Background(), fleet, snap)
}

// deltaResponse answers w from what changed since its subscription's
// state, or returns nil when nothing did (and w keeps waiting). With
// extra, those names are looked at too (what the request subscribed or
// unsubscribed); a subscription seen for the first time, or too far
// behind, is compared name by name. s.mu is held.
func (s *Server) deltaResponse(fs *fleetState, w *deltaWatch, extra []string) cachev3.DeltaResponse {
	typ := w.req.GetTypeUrl()
	ts := fs.types[typ]
	if ts == nil {
		ts = &typeResources{items: map[string]*item{}}
	}
	known := w.sub.ReturnedResources()
	wildcard := w.sub.IsWildcard()
	subscribed := w.sub.SubscribedResources()
	sy := w.sync
	full := sy.known == nil || !sameMap(sy.known, known) || sy.wildcard != wildcard || sy.seq < ts.logFrom
	var names []string
	if full {
		if known == nil {
			known = map[string]string{}
		}
		names = make([]string, 0, len(ts.items)+len(known))
		for name := range ts.items {
			names = append(names, name)
		}
		for name := range known {
			if ts.items[name] == nil {
				names = append(names, name)
			}
		}
		for name := range subscribed {
			names = append(names, name)
		}
	} else {
		i, _ := slices.BinarySearchFunc(ts.log, sy.seq+1, func(l logged, seq uint64) int { return cmp.Compare(l.seq, seq) })
		for _, l := range ts.log[i:] {
			names = append(names, l.name)
		}
		names = append(names, extra...)
	}
	resp := &deltaResponse{req: w.req, next: known, version: s.serving[w.req.GetNode().GetCluster()].versions[typ]}
	seen := make(map[string]bool, len(names))
	for _, name := range names {
		if name == "*" || seen[name] {
			continue
		}
		seen[name] = true
		it := ts.items[name]
		_, wanted := subscribed[name]
		wanted = wanted || wildcard
		v, has := known[name]
		switch {
		case wanted && it != nil:
			if !has || v != it.version {
				resp.resources = append(resp.resources, namedItem{name, it})
				known[name] = it.version
			}
		case it == nil && has:
			if wanted || wildcard {
				resp.removed = append(resp.removed, name)
			}
			delete(known, name)
		case has:
			delete(known, name) // no longer subscribed: forgotten, not removed
		}
	}
	*sy = deltaSync{known: known, seq: ts.seq, wildcard: wildcard}
	if len(resp.resources) == 0 && len(resp.removed) == 0 && !(wildcard && w.req.GetResponseNonce() == "") {
		return nil
	}
	return resp
}

func sameMap(a, b map[string]string) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

type namedItem struct {
	name string
	*item
}

// deltaResponse is a delta response built when sent: resources with a
// known wire form are not marshalled again.
type deltaResponse struct {
	req       *discoveryv3.DeltaDiscoveryRequest
	resources []namedItem
	removed   []string
	next      map[string]string
	version   string
	built     atomic.Pointer[discoveryv3.DeltaDiscoveryResponse]
}

var _ cachev3.DeltaResponse = (*deltaResponse)(nil)

func (r *deltaResponse) GetDeltaDiscoveryResponse() (*discoveryv3.DeltaDiscoveryResponse, error) {
	if out := r.built.Load(); out != nil {
		return out, nil
	}
	out := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: r.req.GetTypeUrl(), RemovedResources: r.removed, SystemVersionInfo: r.version,
		Resources: make([]*discoveryv3.Resource, 0, len(r.resources))}
	for _, it := range r.resources {
		var b []byte
		if it.wire != nil {
			b = it.wire.bytes()
		} else {
			var err error
			if b, err = cachev3.MarshalResource(it.res); err != nil {
				return nil, err
			}
		}
		out.Resources = append(out.Resources, &discoveryv3.Resource{Name: it.name, Version: it.version,
			Resource: &anypb.Any{TypeUrl: r.req.GetTypeUrl(), Value: b}})
	}
	r.built.Store(out)
	return out, nil
}

func (r *deltaResponse) GetDeltaRequest() *discoveryv3.DeltaDiscoveryRequest { return r.req }
func (r *deltaResponse) GetSystemVersion() (string, error)                   { return r.version, nil }
func (r *deltaResponse) GetResponseVersion() string                          { return r.version }
func (r *deltaResponse) GetNextVersionMap() map[string]string                { return r.next }
func (r *deltaResponse) GetReturnedResources() map[string]string             { return r.next }
func (r *deltaResponse) GetContext() context.Context                         { return context.Background() }

// cache is what go-control-plane's protocol server asks for responses.
type cache struct{ s *Server }

var _ cachev3.Cache = cache{}

// CreateWatch serves a state-of-the-world request from the snapshot cache,
// after bringing the fleet's snapshot there up to date.
func (c cache) CreateWatch(req *discoveryv3.DiscoveryRequest, sub cachev3.Subscription, ch chan cachev3.Response) (func(), error) {
	s := c.s
	fleet := req.GetNode().GetCluster()
	s.mu.Lock()
	var err error
	if fs := s.fleets[fleet]; fs != nil {
		err = s.setSotW(fleet, fs)
	}
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return s.sotw.CreateWatch(req, sub, ch)
}

// CreateDeltaWatch answers a delta request at once if the stream misses
// something, or else waits for a change that concerns it.
func (c cache) CreateDeltaWatch(req *discoveryv3.DeltaDiscoveryRequest, sub cachev3.Subscription, ch chan cachev3.DeltaResponse) (func(), error) {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.deltaReqs[req]
	delete(s.deltaReqs, req)
	sy := &deltaSync{}
	if st != nil {
		if st.sync[req.GetTypeUrl()] == nil {
			st.sync[req.GetTypeUrl()] = sy
		}
		sy = st.sync[req.GetTypeUrl()]
		st.pendingReq = nil
	}
	fs := s.fleetState(req.GetNode().GetCluster())
	w := &deltaWatch{req: req, sub: sub, ch: ch, sync: sy}
	if fs.served {
		extra := append(slices.Clone(req.GetResourceNamesSubscribe()), req.GetResourceNamesUnsubscribe()...)
		if resp := s.deltaResponse(fs, w, extra); resp != nil {
			ch <- resp
			return nil, nil
		}
	}
	fs.watches[w] = true
	return func() {
		s.mu.Lock()
		delete(fs.watches, w)
		s.mu.Unlock()
	}, nil
}

func (c cache) Fetch(ctx context.Context, req *discoveryv3.DiscoveryRequest) (cachev3.Response, error) {
	return c.s.sotw.Fetch(ctx, req)
}

// typeHasResources reports whether the fleet is served resources of typ. s.mu is held.
func (s *Server) typeHasResources(fleet, typ string) bool {
	fs := s.fleets[fleet]
	return fs != nil && fs.types[typ] != nil && len(fs.types[typ].items) > 0
}
