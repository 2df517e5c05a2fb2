// Package server serves each fleet's xDS snapshot to its proxies over ADS,
// state-of-the-world and delta, using go-control-plane's snapshot cache.
//
// Versions are content hashes: a type whose resources did not change keeps its
// version, so state-of-the-world proxies are not sent it again, and delta
// proxies get only the resources whose own hash changed. Set calls are
// coalesced (a short debounce, never longer than a maximum delay), and a
// snapshot identical to the one being served is never set again.
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
	"sort"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Options configure a Server.
type Options struct {
	Log logr.Logger
	// Registerer for the metrics; nil uses prometheus.NewRegistry() (tests) —
	// cmd/ passes controller-runtime's metrics.Registry.
	Registerer prometheus.Registerer
	// Debounce waits this long after the last Set before building a snapshot (default 100ms).
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
	opts    Options
	log     logr.Logger
	cache   cachev3.SnapshotCache
	xds     serverv3.Server
	metrics *metrics

	kick chan struct{}

	mu        sync.Mutex
	pending   map[string]*pendingSet // fleet → latest unapplied Set
	nextGen   map[string]uint64      // fleet → last generation handed out
	serving   map[string]*served     // fleet → snapshot being served
	acked     map[string]uint64      // fleet → newest generation every proxy acknowledged
	streams   map[streamKey]*stream
	onAcked   []func(fleet string, generation uint64)
	onProxies []func(fleet string)
	onNACK    []func(fleet string, n NACK)
	onServed  []func(fleet string)
	lastErrs  map[string]error // fleet → why the newest Set was refused
}

type pendingSet struct {
	resources map[resource.Type][]types.Resource
	gen       uint64
	first     time.Time // when the oldest unapplied Set arrived
	last      time.Time
}

type served struct {
	snap     *cachev3.Snapshot
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
		nextGen:  map[string]uint64{},
		serving:  map[string]*served{},
		acked:    map[string]uint64{},
		streams:  map[streamKey]*stream{},
		lastErrs: map[string]error{},
	}
	s.cache = cachev3.NewSnapshotCache(true, fleetHash{}, nil)
	s.xds = serverv3.NewServer(context.Background(), s.cache, s)
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
		p = &pendingSet{first: now}
		s.pending[fleet] = p
	}
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

// flushDue applies every pending Set whose debounce or maximum delay has
// passed, and returns how long until the next one is due.
func (s *Server) flushDue(now time.Time) (time.Duration, bool) {
	s.mu.Lock()
	var due []string
	next := time.Duration(-1)
	for fleet, p := range s.pending {
		at := p.last.Add(s.opts.Debounce)
		if maxAt := p.first.Add(s.opts.MaxDelay); maxAt.Before(at) {
			at = maxAt
		}
		if !at.After(now) {
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
		if err := s.apply(fleet, p); err != nil {
			s.log.Error(err, "refused a snapshot; the fleet keeps its last good configuration", "fleet", fleet, "generation", p.gen)
		}
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
// in any order, give the same hash.
func Hash(rs []types.Resource) (string, error) {
	sorted := slices.Clone(rs)
	sort.Slice(sorted, func(i, j int) bool { return cachev3.GetResourceName(sorted[i]) < cachev3.GetResourceName(sorted[j]) })
	h := sha256.New()
	for _, r := range sorted {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", cachev3.GetResourceName(r), len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

var xdsTypes = []resource.Type{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType, resource.SecretType}

func (s *Server) apply(fleet string, p *pendingSet) error {
	fail := func(err error) error {
		s.metrics.rejects.WithLabelValues(fleet).Inc()
		s.mu.Lock()
		s.lastErrs[fleet] = err
		s.mu.Unlock()
		return err
	}
	var errs []error
	versions := map[resource.Type]string{}
	snap := &cachev3.Snapshot{}
	all := sha256.New()
	for _, typ := range xdsTypes {
		items := p.resources[typ]
		for _, r := range items {
			if v, ok := r.(interface{ Validate() error }); ok {
				if err := v.Validate(); err != nil {
					errs = append(errs, fmt.Errorf("%s %q: %w", typ, cachev3.GetResourceName(r), err))
				}
			}
		}
		v, err := Hash(items)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		versions[typ] = v
		fmt.Fprintf(all, "%s=%s;", typ, v)
		snap.Resources[cachev3.GetResponseType(typ)] = cachev3.NewResources(v, items)
	}
	if err := errors.Join(errs...); err != nil {
		return fail(err)
	}
	if err := snap.Consistent(); err != nil {
		return fail(fmt.Errorf("snapshot is not consistent: %w", err))
	}
	// Delta ACK tracking compares against per-resource versions; build them
	// now rather than letting the cache build them lazily on first use.
	if err := snap.ConstructVersionMap(); err != nil {
		return fail(err)
	}
	version := hex.EncodeToString(all.Sum(nil))[:16]

	s.mu.Lock()
	delete(s.lastErrs, fleet)
	cur := s.serving[fleet]
	if cur != nil && cur.version == version {
		// Nothing changed: the served snapshot already contains this generation.
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
	s.serving[fleet] = &served{snap: snap, versions: versions, version: version, gen: p.gen, setAt: setAt}
	s.mu.Unlock()

	if err := s.cache.SetSnapshot(context.Background(), fleet, snap); err != nil {
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
		if !st.current(cur) {
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
