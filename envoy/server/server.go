// Package server serves each fleet's xDS snapshot to its proxies over ADS,
// state-of-the-world and delta, through go-control-plane's protocol server.
// Delta streams are answered from what changed since what each was sent (a
// change log per type, cache.go), so one changed resource costs work for that
// resource, not for the fleet; state-of-the-world streams from
// go-control-plane's snapshot cache.
//
// Versions are content hashes: a type whose resources did not change keeps its
// version, so state-of-the-world proxies are not sent it again, and delta
// proxies get only the resources whose own hash changed. A lone Set is
// applied at once; Sets that follow one another closely are coalesced (a
// short debounce, never longer than a maximum delay), and a snapshot
// identical to the one being served is never set again.
//
// The server also records what every connected proxy acknowledged, so the
// manager learns (OnAcked) when a fleet runs a configuration that contains a
// given change, and every NACK with its error detail.
package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Options configure a Server.
type Options struct {
	Log logr.Logger
	// Registerer for the metrics; nil uses prometheus.NewRegistry() (tests) —
	// cmd/ passes controller-runtime's metrics.Registry.
	Registerer prometheus.Registerer
	// Debounce coalesces Sets: a Set that comes within Debounce of the
	// previous one waits until no Set came for Debounce (default 100ms). A
	// Set after a quiet Debounce is applied at once: a lone change does not
	// wait, a burst is applied in few snapshots.
	Debounce time.Duration
	// MaxDelay bounds how long a Set may wait under a stream of changes (default 1s).
	MaxDelay time.Duration
	// Insecure trusts the node.cluster a proxy claims (plaintext xDS,
	// --xds-insecure). Otherwise a stream needs a verified client certificate
	// (pki.FleetOf) and gets the fleet it names; a node.cluster that differs
	// is refused with PermissionDenied before anything is sent.
	Insecure bool
	// FleetExists reports whether a ProxyFleet of that name exists; streams
	// of any other fleet are refused. nil accepts every non-empty name.
	FleetExists func(fleet string) bool
}

// Server is the xDS server of all fleets.
type Server struct {
	opts Options
	log  logr.Logger
	// sotw serves state-of-the-world streams from a snapshot per fleet,
	// built from fleets only while the fleet has such streams (cache.go).
	sotw    cachev3.SnapshotCache
	xds     serverv3.Server
	metrics *metrics

	kick chan struct{}

	mu        sync.Mutex
	pending   map[string]*pendingSet // fleet → latest unapplied Set
	lastSet   map[string]time.Time   // fleet → when its last Set came
	applied   map[string]appliedAt   // fleet → when its last apply ended and what it took
	nextGen   map[string]uint64      // fleet → last generation handed out
	serving   map[string]*served     // fleet → snapshot being served
	acked     map[string]uint64      // fleet → newest generation every proxy acknowledged
	streams   map[streamKey]*stream
	onAcked   []func(fleet string, generation uint64)
	onProxies []func(fleet string)
	onNACK    []func(fleet string, n NACK)
	onServed  []func(fleet string)
	lastErrs  map[string]error // fleet → why the newest Set was refused
	// checked is, per fleet, what the last applied Set's resources were found to be.
	checked map[string]*fleetChecked
	// fleets is what each fleet is served, with its delta watches (cache.go).
	fleets map[string]*fleetState
	// deltaReqs links a delta request to its stream between the request
	// callback and the watch the request opens.
	deltaReqs map[*discoveryv3.DeltaDiscoveryRequest]*stream
}

type pendingSet struct {
	resources map[resource.Type][]types.Resource
	gen       uint64
	first     time.Time // when the oldest unapplied Set arrived
	last      time.Time
	// lone: the first Set came after a quiet Debounce; applied at once
	// unless another follows before it is.
	lone bool
}

type served struct {
	versions map[resource.Type]string
	version  string // hash over all types
	gen      uint64
	setAt    map[uint64]time.Time // generations not yet acknowledged → when they were Set
}

// New returns a server; call Register, then Run.
func New(opts Options) *Server {
	if opts.Debounce == 0 {
		opts.Debounce = 100 * time.Millisecond
	}
	if opts.MaxDelay == 0 {
		opts.MaxDelay = time.Second
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	s := &Server{
		opts:     opts,
		log:      opts.Log,
		metrics:  newMetrics(opts.Registerer),
		kick:     make(chan struct{}, 1),
		pending:  map[string]*pendingSet{},
		lastSet:  map[string]time.Time{},
		applied:  map[string]appliedAt{},
		nextGen:  map[string]uint64{},
		serving:  map[string]*served{},
		acked:    map[string]uint64{},
		streams:  map[streamKey]*stream{},
		lastErrs: map[string]error{},
		checked:  map[string]*fleetChecked{},
		fleets:   map[string]*fleetState{},

		deltaReqs: map[*discoveryv3.DeltaDiscoveryRequest]*stream{},
	}
	s.sotw = cachev3.NewSnapshotCache(true, fleetHash{}, nil)
	s.xds = serverv3.NewServer(context.Background(), cache{s}, s)
	return s
}

// fleetHash keys snapshots by node.cluster: every proxy of a fleet gets the
// same configuration. The callbacks refused every stream whose node.cluster
// is not the fleet its certificate names before the cache sees a request.
type fleetHash struct{}

func (fleetHash) ID(node *corev3.Node) string { return node.GetCluster() }

// OnAcked registers f to be called (outside the server's lock, in order) each
// time a fleet's acknowledged generation moves forward. A fleet has
// acknowledged generation G when at least one of its proxies is connected and
// every connected proxy has ACKed, for every type it subscribes to, the
// snapshot built from a Set whose generation is G or later.
func (s *Server) OnAcked(f func(fleet string, generation uint64)) {
	s.mu.Lock()
	s.onAcked = append(s.onAcked, f)
	s.mu.Unlock()
}

// OnProxiesChanged registers f to be called (outside the server's lock) when a
// proxy of a fleet connects (its first request names its node) or disconnects.
func (s *Server) OnProxiesChanged(f func(fleet string)) {
	s.mu.Lock()
	s.onProxies = append(s.onProxies, f)
	s.mu.Unlock()
}

func (s *Server) proxiesChanged(fleet string) {
	s.mu.Lock()
	subs := slices.Clone(s.onProxies)
	s.mu.Unlock()
	for _, f := range subs {
		f(fleet)
	}
}

// Set hands the server a fleet's complete resources and returns the
// generation they are part of. The snapshot is built after the debounce.
func (s *Server) Set(fleet string, resources map[resource.Type][]types.Resource) uint64 {
	now := time.Now()
	s.mu.Lock()
	s.nextGen[fleet]++
	gen := s.nextGen[fleet]
	p := s.pending[fleet]
	if p == nil {
		prev, ok := s.lastSet[fleet]
		p = &pendingSet{first: now, lone: !ok || now.Sub(prev) >= s.opts.Debounce}
		s.pending[fleet] = p
	} else {
		p.lone = false // a burst: wait for it to settle
	}
	s.lastSet[fleet] = now
	p.resources, p.gen, p.last = resources, gen, now
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return gen
}

// Run applies pending Sets until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		if wait, ok := s.flushDue(time.Now()); ok {
			timer.Reset(wait)
		}
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-s.kick:
		case <-timer.C:
		}
	}
}

// burstApplySpacing: within a burst a fleet's snapshot is applied at most
// once per this many times what its last apply took (from that apply's end),
// even past MaxDelay. Applying compares, hashes and pushes what changed in a
// fleet of tens of thousands of resources (≈ 100 ms at 10 000 LoadBalancers
// + 10 000 Routes while it grows): a burst's Sets then cost the server at
// most about a tenth of a core and are coalesced more the bigger the fleet,
// where each push also costs every proxy. A lone Set is never held back.
const burstApplySpacing = 10

// appliedAt is when a fleet's last apply ended and how long it took.
type appliedAt struct {
	end  time.Time
	took time.Duration
}

// flushDue applies every pending Set whose debounce or maximum delay has
// passed, and returns how long until the next one is due.
func (s *Server) flushDue(now time.Time) (time.Duration, bool) { return s.flush(now, false) }

func (s *Server) flush(now time.Time, all bool) (time.Duration, bool) {
	s.mu.Lock()
	var due []string
	next := time.Duration(-1)
	for fleet, p := range s.pending {
		at := p.last.Add(s.opts.Debounce)
		if p.lone {
			at = p.first
		}
		if maxAt := p.first.Add(s.opts.MaxDelay); maxAt.Before(at) {
			at = maxAt
		}
		if a, ok := s.applied[fleet]; ok && !p.lone {
			if spaced := a.end.Add(burstApplySpacing * a.took); spaced.After(at) {
				at = spaced
			}
		}
		if all || !at.After(now) {
			due = append(due, fleet)
			continue
		}
		if wait := at.Sub(now); next < 0 || wait < next {
			next = wait
		}
	}
	work := map[string]*pendingSet{}
	for _, f := range due {
		work[f] = s.pending[f]
		delete(s.pending, f)
	}
	s.mu.Unlock()
	for _, fleet := range slices.Sorted(mapsKeys(work)) {
		p := work[fleet]
		s.metrics.debounce.Observe(now.Sub(p.first).Seconds())
		start := time.Now()
		if err := s.apply(fleet, p); err != nil {
			s.log.Error(err, "refused a snapshot; the fleet keeps its last good configuration", "fleet", fleet, "generation", p.gen)
		}
		end := time.Now()
		s.mu.Lock()
		s.applied[fleet] = appliedAt{end: end, took: end.Sub(start)}
		s.mu.Unlock()
	}
	return next, next >= 0
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// Hash is the content version of a list of resources: the same resources,
// in any order, give the same hash. It is what apply computes per type.
func Hash(rs []types.Resource) (string, error) {
	entries := make([]named, 0, len(rs))
	for _, r := range rs {
		h, _, _, err := contentHash(r, checked{})
		if err != nil {
			return "", err
		}
		entries = append(entries, named{cachev3.GetResourceName(r), h})
	}
	return typeVersion(entries), nil
}

type named struct{ name, hash string }

// typeVersion is the version of a type: a hash over its resources' names and
// content hashes (the per-resource versions delta xDS uses), by name.
func typeVersion(entries []named) string {
	byName := func(a, b named) int { return strings.Compare(a.name, b.name) }
	if !slices.IsSortedFunc(entries, byName) {
		entries = slices.Clone(entries)
		slices.SortFunc(entries, byName)
	}
	h := sha256.New()
	var buf []byte
	for _, e := range entries {
		buf = append(buf, e.name...)
		buf = append(buf, 0)
		buf = append(buf, e.hash...)
		buf = append(buf, 0)
		if len(buf) > 32<<10 {
			h.Write(buf)
			buf = buf[:0]
		}
	}
	h.Write(buf)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

var xdsTypes = []resource.Type{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType, resource.SecretType}

// checked is what apply learned about one resource: whether it is valid, its
// content hash and the resources it refers to. A Set that hands the same
// resource (the same pointer: translate reuses what did not change, and a
// resource is never modified once set) is not validated, marshalled, hashed
// or searched for references again.
type checked struct {
	res  types.Resource
	hash string
	// vhosts: a route configuration's virtual hosts' wire forms and their
	// digests, in its order (contentHash), and wire its own, put together
	// from them when pushed.
	vhosts []vhostWire
	wire   *wireForm
	refs   []reference // what a cluster or listener refers to
	err    error
}

// reference is a resource another one names.
type reference struct {
	typ  resource.Type
	name string
}

// fleetChecked is what the last applied Set of a fleet was found to be.
type fleetChecked struct {
	types      map[resource.Type]*typeState
	consistent bool
	// refs counts what clusters and listeners refer to, kept up to date
	// from the changes (taken over from the previous state).
	refs *refIndex
	// unserved names, per type, the resources that changed (or went) since
	// the fleet's served state was last brought up to date: serving looks
	// at those only.
	unserved map[resource.Type]map[string]bool
}

// typeState is the resources of one type as last handed, and what a
// snapshot needs of them. A type handed again unchanged (the same resources
// in the same order) is taken as it is; maps are never modified once built,
// since snapshots in use share them.
type typeState struct {
	items   []types.Resource
	byName  map[string]checked
	entries []named // of items, in their order
	version string
	err     error // of its resources, joined
	// changed names the resources checked anew (or gone) since the previous
	// state; changes says what each was and is.
	changed []string
	changes []change
}

// change is a resource checked anew or gone: what it referred to, and refers to.
type change struct {
	old, new []reference
}

// checkType builds the state of a type's resources, checking only those
// not in prev; namesChanged says whether the set of names differs from prev's.
func checkType(prev *typeState, typ resource.Type, items []types.Resource) (t *typeState, namesChanged bool) {
	if prev == nil {
		prev = &typeState{}
	}
	if t := patchType(prev, typ, items); t != nil {
		return t, false
	}
	// byName is only apply's: it is taken over and patched.
	t = &typeState{items: items, byName: prev.byName}
	prev.byName = nil
	if t.byName == nil {
		t.byName = map[string]checked{}
	}
	before := len(t.byName)
	entries := make([]named, 0, len(items))
	var errs []error
	added := 0
	for _, r := range items {
		name := cachev3.GetResourceName(r)
		c, had := t.byName[name]
		if !had {
			added++
		}
		if !had || c.res != r {
			old := c
			c, _ = check(t.byName, typ, name, r)
			t.byName[name] = c
			t.changed = append(t.changed, name)
			t.changes = append(t.changes, change{old: old.refs, new: c.refs})
		}
		if c.err != nil {
			errs = append(errs, c.err)
		}
		entries = append(entries, named{name, c.hash})
	}
	namesChanged = added > 0
	if before+added != len(items) {
		// Some are gone (or a name came twice): drop what is not handed now.
		now := make(map[string]bool, len(items))
		for _, e := range entries {
			now[e.name] = true
		}
		for name := range t.byName {
			if !now[name] {
				t.changes = append(t.changes, change{old: t.byName[name].refs})
				delete(t.byName, name)
				t.changed = append(t.changed, name)
				namesChanged = true
			}
		}
	}
	t.err = errors.Join(errs...)
	t.entries = entries
	t.version = typeVersion(entries)
	return t, namesChanged
}

// patchType is checkType when items are prev's but for a few positions,
// each holding a new resource of the same name, and prev's were all valid:
// only those are checked, the rest is not looked at by name. nil when it
// does not apply.
func patchType(prev *typeState, typ resource.Type, items []types.Resource) *typeState {
	if prev.byName == nil || prev.err != nil || len(prev.items) != len(items) || len(prev.entries) != len(items) || len(prev.byName) != len(items) {
		return nil
	}
	var changed []int
	for i := range items {
		if items[i] != prev.items[i] {
			if len(changed) > len(items)/8 {
				return nil // many: the general way
			}
			changed = append(changed, i)
		}
	}
	for _, i := range changed {
		if cachev3.GetResourceName(items[i]) != prev.entries[i].name {
			return nil
		}
	}
	t := &typeState{items: items, byName: prev.byName, entries: slices.Clone(prev.entries)}
	prev.byName = nil
	var errs []error
	for _, i := range changed {
		name, r := t.entries[i].name, items[i]
		old := t.byName[name]
		c, _ := check(t.byName, typ, name, r)
		t.byName[name] = c
		t.changed = append(t.changed, name)
		t.changes = append(t.changes, change{old: old.refs, new: c.refs})
		t.entries[i].hash = c.hash
		if c.err != nil {
			errs = append(errs, c.err)
		}
	}
	t.err = errors.Join(errs...)
	t.version = typeVersion(t.entries)
	return t
}

// check validates and hashes r, or reuses what was learned when the same
// resource was last applied. reused says which.
func check(prev map[string]checked, typ resource.Type, name string, r types.Resource) (c checked, reused bool) {
	if c, ok := prev[name]; ok && c.res == r {
		return c, true
	}
	c = checked{res: r}
	if err := validate(r, prev[name]); err != nil {
		c.err = fmt.Errorf("%s %q: %w", typ, name, err)
	}
	var err error
	if c.hash, c.vhosts, c.wire, err = contentHash(r, prev[name]); err != nil {
		c.err = errors.Join(c.err, err)
		return c, false
	}
	if typ == resource.ClusterType || typ == resource.ListenerType {
		for t, names := range cachev3.GetResourceReferences(map[string]types.ResourceWithTTL{name: {Resource: r}}) {
			for n := range names {
				c.refs = append(c.refs, reference{t, n})
			}
		}
	}
	return c, false
}

// vhostWire is a virtual host's wire form and its SHA-256.
type vhostWire struct {
	b   []byte
	sum [sha256.Size]byte
}

// contentHash is r's content hash, the per-resource version delta proxies
// get: cachev3.HashResource of cachev3.MarshalResource(r), but for a route
// configuration with no field but its name and virtual hosts. That one (the
// big shared one, which changes by a host at a time) is versioned by a hash
// over its name's wire form and its virtual hosts' digests, those of prev's
// reused (by identity), so a change hashes the host that changed, not the
// whole configuration. Its wire form is put together from theirs (the name's
// field, then each virtual host as field 2: tag, length, bytes; fields go in
// number order), returned, and pushed as it is.
func contentHash(r types.Resource, prev checked) (hash string, vhosts []vhostWire, wire *wireForm, err error) {
	rc, ok := r.(*routev3.RouteConfiguration)
	if !ok || !proto.Equal(routeConfigShell(rc), &routev3.RouteConfiguration{Name: rc.Name}) || slices.Contains(rc.VirtualHosts, nil) {
		b, err := cachev3.MarshalResource(r)
		if err != nil {
			return "", nil, nil, err
		}
		return cachev3.HashResource(b), nil, nil, nil
	}
	head, err := cachev3.MarshalResource(&routev3.RouteConfiguration{Name: rc.Name})
	if err != nil {
		return "", nil, nil, err
	}
	// The previous one's hosts are looked up by position (a host replaced
	// in place), then by identity (hosts added or removed before it).
	var old []*routev3.VirtualHost
	if o, ok := prev.res.(*routev3.RouteConfiguration); ok && len(prev.vhosts) == len(o.VirtualHosts) {
		old = o.VirtualHosts
	}
	var at map[*routev3.VirtualHost]int
	vhosts = make([]vhostWire, len(rc.VirtualHosts))
	h := sha256.New()
	h.Write([]byte("route configuration by virtual hosts\x00"))
	h.Write(head)
	size := len(head)
	for i, vh := range rc.VirtualHosts {
		j, ok := i, i < len(old) && old[i] == vh
		if !ok && old != nil {
			if at == nil {
				at = make(map[*routev3.VirtualHost]int, len(old))
				for k, o := range old {
					at[o] = k
				}
			}
			j, ok = at[vh]
		}
		var w vhostWire
		if ok {
			w = prev.vhosts[j]
		} else {
			if w.b, err = (proto.MarshalOptions{Deterministic: true}).Marshal(vh); err != nil {
				return "", nil, nil, err
			}
			w.sum = sha256.Sum256(w.b)
		}
		vhosts[i] = w
		h.Write(w.sum[:])
		size += 1 + protowire.SizeVarint(uint64(len(w.b))) + len(w.b)
	}
	return hex.EncodeToString(h.Sum(nil)), vhosts, &wireForm{head: head, vhosts: vhosts, size: size}, nil
}

// wireForm is a route configuration's wire form, put together from its
// name's and its virtual hosts' when first pushed (not at each Set: one
// that no proxy is sent is never put together).
type wireForm struct {
	head   []byte
	vhosts []vhostWire
	size   int
	once   sync.Once
	b      []byte
}

func (f *wireForm) bytes() []byte {
	f.once.Do(func() {
		b := make([]byte, 0, f.size)
		b = append(b, f.head...)
		for _, w := range f.vhosts {
			b = protowire.AppendVarint(protowire.AppendTag(b, 2, protowire.BytesType), uint64(len(w.b)))
			b = append(b, w.b...)
		}
		f.b = b
	})
	return f.b
}

// routeConfigShell is a shallow copy of rc's fields but its virtual hosts.
func routeConfigShell(rc *routev3.RouteConfiguration) *routev3.RouteConfiguration {
	shell := &routev3.RouteConfiguration{}
	rc.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Name() != "virtual_hosts" {
			shell.ProtoReflect().Set(fd, v)
		}
		return true
	})
	return shell
}

// validate runs r's Validate(). A route configuration that follows a valid
// one of the same name is validated for its own fields and the virtual hosts
// that are new (by identity): the big shared one changes by a host at a time.
func validate(r types.Resource, prev checked) error {
	rc, ok := r.(*routev3.RouteConfiguration)
	old, okOld := prev.res.(*routev3.RouteConfiguration)
	if !ok || !okOld || prev.err != nil {
		if v, ok := r.(interface{ Validate() error }); ok {
			return v.Validate()
		}
		return nil
	}
	var known map[*routev3.VirtualHost]bool // built when a host is not where it was
	if err := routeConfigShell(rc).Validate(); err != nil {
		return err
	}
	for i, vh := range rc.VirtualHosts {
		if i < len(old.VirtualHosts) && old.VirtualHosts[i] == vh {
			continue
		}
		if known == nil {
			known = make(map[*routev3.VirtualHost]bool, len(old.VirtualHosts))
			for _, vh := range old.VirtualHosts {
				known[vh] = true
			}
		}
		if !known[vh] {
			if err := vh.Validate(); err != nil {
				return fmt.Errorf("invalid RouteConfiguration.VirtualHosts[%d]: %w", i, err)
			}
		}
	}
	return nil
}

// consistent is go-control-plane's Snapshot.Consistent from the references
// found per resource: the endpoints the clusters name and the route
// configurations the listeners name are exactly those in the snapshot.
func consistent(byType map[resource.Type]*typeState) error {
	for _, typ := range []resource.Type{resource.EndpointType, resource.RouteType} {
		referenced := map[string]bool{}
		for _, from := range []resource.Type{resource.ClusterType, resource.ListenerType} {
			for _, c := range byType[from].byName {
				for _, ref := range c.refs {
					if ref.typ == typ {
						referenced[ref.name] = true
					}
				}
			}
		}
		items := byType[typ].byName
		if len(referenced) != len(items) {
			return fmt.Errorf("mismatched %q reference and resource lengths: %d != %d", typ, len(referenced), len(items))
		}
		for name := range referenced {
			if _, ok := items[name]; !ok {
				return fmt.Errorf("inconsistent %q reference: %q not listed", typ, name)
			}
		}
	}
	return nil
}

func (s *Server) apply(fleet string, p *pendingSet) error {
	fail := func(err error) error {
		s.metrics.rejects.WithLabelValues(fleet).Inc()
		s.mu.Lock()
		s.lastErrs[fleet] = err
		s.mu.Unlock()
		return err
	}
	s.mu.Lock()
	prev := s.checked[fleet]
	s.mu.Unlock()
	if prev == nil {
		prev = &fleetChecked{types: map[resource.Type]*typeState{}}
	}
	next := &fleetChecked{types: map[resource.Type]*typeState{}, unserved: prev.unserved, refs: prev.refs}
	prev.refs = nil
	if next.refs == nil {
		next.refs = newRefIndex()
	}
	if next.unserved == nil {
		next.unserved = map[resource.Type]map[string]bool{}
	}
	var errs []error
	all := sha256.New()
	for _, typ := range xdsTypes {
		items := p.resources[typ]
		t := prev.types[typ]
		if t != nil && slices.Equal(t.items, items) {
			// Handed again unchanged: nothing changed since.
			t = &typeState{items: t.items, byName: t.byName, entries: t.entries, version: t.version, err: t.err}
		} else {
			t, _ = checkType(t, typ, items)
			if len(t.changed) > 0 && next.unserved[typ] == nil {
				next.unserved[typ] = map[string]bool{}
			}
			for _, name := range t.changed {
				next.unserved[typ][name] = true
			}
		}
		next.types[typ] = t
		if t.err != nil {
			errs = append(errs, t.err)
		}
		fmt.Fprintf(all, "%s=%s;", typ, t.version)
	}
	err := errors.Join(errs...)
	next.refs.update(next.types)
	for _, t := range next.types {
		t.changes = nil // taken; what they hold need not stay
	}
	if err == nil {
		if err = next.refs.consistent(next.types); err != nil {
			err = fmt.Errorf("snapshot is not consistent: %w", err)
		}
	}
	next.consistent = err == nil
	s.mu.Lock()
	s.checked[fleet] = next
	s.mu.Unlock()
	if err != nil {
		return fail(err)
	}
	version := hex.EncodeToString(all.Sum(nil))[:16]

	s.mu.Lock()
	delete(s.lastErrs, fleet)
	cur := s.serving[fleet]
	if cur != nil && cur.version == version {
		// Nothing changed: the served snapshot already contains this generation.
		next.unserved = nil
		cur.gen = p.gen
		cur.setAt[p.gen] = p.first
		s.mu.Unlock()
		s.checkAcked(fleet)
		return nil
	}
	setAt := map[uint64]time.Time{p.gen: p.first}
	if cur != nil {
		for g, t := range cur.setAt {
			setAt[g] = t
		}
	}
	versions := map[resource.Type]string{}
	for typ, t := range next.types {
		versions[typ] = t.version
	}
	s.serving[fleet] = &served{versions: versions, version: version, gen: p.gen, setAt: setAt}
	err = s.serve(fleet, next)
	next.unserved = nil
	s.mu.Unlock()
	if err != nil {
		return fail(err)
	}
	s.metrics.snapshots.WithLabelValues(fleet).Inc()
	s.log.V(1).Info("snapshot set", "fleet", fleet, "version", version, "generation", p.gen)
	s.servedNew(fleet)
	s.checkAcked(fleet)
	return nil
}

// LastError is why the newest Set of a fleet was refused, or nil.
func (s *Server) LastError(fleet string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErrs[fleet]
}

// Version is the content version of the snapshot a fleet is served, and its generation.
func (s *Server) Version(fleet string) (string, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur := s.serving[fleet]; cur != nil {
		return cur.version, cur.gen
	}
	return "", 0
}

// AckedGeneration is the newest generation every connected proxy of the fleet acknowledged.
func (s *Server) AckedGeneration(fleet string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acked[fleet]
}

// checkAcked advances the fleet's acknowledged generation when every
// connected proxy runs the served snapshot.
func (s *Server) checkAcked(fleet string) {
	s.mu.Lock()
	cur := s.serving[fleet]
	if cur == nil || cur.gen <= s.acked[fleet] {
		s.mu.Unlock()
		return
	}
	proxies := 0
	for _, st := range s.streams {
		if st.fleet != fleet || st.node == "" {
			continue
		}
		proxies++
		if !s.current(st, cur) {
			s.mu.Unlock()
			return
		}
	}
	if proxies == 0 {
		s.mu.Unlock()
		return
	}
	gen := cur.gen
	s.acked[fleet] = gen
	now := time.Now()
	for g, t := range cur.setAt {
		if g <= gen {
			s.metrics.propagation.WithLabelValues(fleet).Observe(now.Sub(t).Seconds())
			delete(cur.setAt, g)
		}
	}
	subs := slices.Clone(s.onAcked)
	s.mu.Unlock()
	for _, f := range subs {
		f(fleet, gen)
	}
}

// Register adds the ADS service (SotW and delta) to a gRPC server.
func (s *Server) Register(g grpc.ServiceRegistrar) {
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
}

// Proxies is the number of proxies of the fleet connected to this server.
func (s *Server) Proxies(fleet string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, st := range s.streams {
		if st.fleet == fleet && st.node != "" {
			n++
		}
	}
	return n
}

// Flush applies every pending Set now, without waiting for the debounce
// (benchmarks and tests that measure the work of a Set).
func (s *Server) Flush() {
	s.flush(time.Now(), true)
}

// refIndex is what consistent finds, kept up to date from the changes of
// each Set: how many clusters and listeners refer to each endpoint and
// route configuration name, and which referred names are not there.
type refIndex struct {
	count    map[resource.Type]map[string]int
	dangling map[resource.Type]map[string]bool
}

var referable = []resource.Type{resource.EndpointType, resource.RouteType}

func newRefIndex() *refIndex {
	x := &refIndex{count: map[resource.Type]map[string]int{}, dangling: map[resource.Type]map[string]bool{}}
	for _, typ := range referable {
		x.count[typ], x.dangling[typ] = map[string]int{}, map[string]bool{}
	}
	return x
}

// update takes the changes of byType's types.
func (x *refIndex) update(byType map[resource.Type]*typeState) {
	present := func(typ resource.Type, name string) bool { _, ok := byType[typ].byName[name]; return ok }
	refer := func(refs []reference, delta int) {
		for _, ref := range refs {
			count := x.count[ref.typ]
			if count == nil {
				continue // not a type consistency is about
			}
			n := count[ref.name] + delta
			switch {
			case n == 0:
				delete(count, ref.name)
				delete(x.dangling[ref.typ], ref.name)
			case n == 1 && delta > 0 && !present(ref.typ, ref.name):
				x.dangling[ref.typ][ref.name] = true
				count[ref.name] = n
			default:
				count[ref.name] = n
			}
		}
	}
	for _, from := range []resource.Type{resource.ClusterType, resource.ListenerType} {
		for _, c := range byType[from].changes {
			refer(c.old, -1)
			refer(c.new, +1)
		}
	}
	for _, typ := range referable {
		for _, name := range byType[typ].changed {
			switch {
			case present(typ, name):
				delete(x.dangling[typ], name)
			case x.count[typ][name] > 0:
				x.dangling[typ][name] = true
			}
		}
	}
}

// consistent is consistent(byType), from the index.
func (x *refIndex) consistent(byType map[resource.Type]*typeState) error {
	for _, typ := range referable {
		for name := range x.dangling[typ] {
			return fmt.Errorf("inconsistent %q reference: %q not listed", typ, name)
		}
		if n, m := len(x.count[typ]), len(byType[typ].byName); n != m {
			return fmt.Errorf("mismatched %q reference and resource lengths: %d != %d", typ, n, m)
		}
	}
	return nil
}
