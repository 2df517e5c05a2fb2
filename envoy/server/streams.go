package server

import (
	"context"
	"maps"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fleetlb/fleetlb/internal/xdstransport"
)

// streamKey identifies a stream: go-control-plane numbers state-of-the-world
// and delta streams with separate counters, so an ID alone is ambiguous.
type streamKey struct {
	delta bool
	id    int64
}

// stream is what one connected proxy has been sent and has acknowledged.
type stream struct {
	node, fleet string
	// identity is the fleet the verified client certificate names ("" on an
	// insecure server); fleet is set once the first request agrees with it.
	identity string
	delta    bool
	// SotW: type → acknowledged version.
	ackedVersion map[string]string
	// Delta: type → resource → acknowledged version, and subscriptions.
	ackedResources map[string]map[string]string
	wildcard       map[string]bool
	names          map[string]map[string]bool
	sent           map[string]deltaSent // nonce → what that response carried
	// out: per type, the names of served resources the proxy subscribes to
	// and has not acknowledged at their served version, and of resources it
	// acknowledged that are no longer served.
	out map[string]map[string]bool
	// sync: per type, what the cache sent (cache.go); pendingReq is the
	// request between its callback and the watch it opens.
	sync       map[string]*deltaSync
	pendingReq *discoveryv3.DeltaDiscoveryRequest
	// Types the proxy subscribed to.
	types map[string]bool
	// Last NACK.
	nack *NACK
}

type deltaSent struct {
	typ     string
	set     map[string]string
	removed []string
}

// NACK is a configuration a proxy refused.
type NACK struct {
	Node, TypeURL, Version, Detail string
}

func newStream(delta bool) *stream {
	return &stream{
		delta: delta, ackedVersion: map[string]string{}, ackedResources: map[string]map[string]string{},
		wildcard: map[string]bool{}, names: map[string]map[string]bool{}, sent: map[string]deltaSent{}, types: map[string]bool{},
		out: map[string]map[string]bool{}, sync: map[string]*deltaSync{},
	}
}

// current reports whether the proxy runs the served snapshot for every type
// it subscribes to. s.mu is held.
func (s *Server) current(st *stream, cur *served) bool {
	// A proxy that has not yet subscribed to a type the snapshot has resources of
	// (a reconnecting one asks for routes only after its listeners) is not current,
	// even when every type it did ask for is.
	for typ := range cur.versions {
		if !st.types[typ] && s.typeHasResources(st.fleet, typ) {
			return false
		}
	}
	for typ := range st.types {
		if !st.delta {
			if st.ackedVersion[typ] != cur.versions[typ] {
				return false
			}
			continue
		}
		if len(st.out[typ]) > 0 {
			return false
		}
	}
	return true
}

// recheck updates st.out for the given names of a type (delta).
func (st *stream) recheck(fs *fleetState, typ string, names []string) {
	var items map[string]*item
	if ts := fs.types[typ]; ts != nil {
		items = ts.items
	}
	out := st.out[typ]
	if out == nil {
		out = map[string]bool{}
		st.out[typ] = out
	}
	acked := st.ackedResources[typ]
	for _, name := range names {
		it := items[name]
		v, has := acked[name]
		wanted := st.wildcard[typ] || st.names[typ][name]
		if (wanted && it != nil && (!has || v != it.version)) || (has && it == nil) {
			out[name] = true
		} else {
			delete(out, name)
		}
	}
}

// recheckAll is recheck for every name served, acknowledged or missing.
func (st *stream) recheckAll(fs *fleetState, typ string) {
	var names []string
	if ts := fs.types[typ]; ts != nil {
		for name := range ts.items {
			names = append(names, name)
		}
	}
	for name := range st.ackedResources[typ] {
		names = append(names, name)
	}
	for name := range st.out[typ] {
		names = append(names, name)
	}
	st.recheck(fs, typ, names)
}

// setNode checks the node a request carries against what the stream may
// be, and records the stream's proxy on its first request; it reports
// whether the proxy just joined its fleet. An error refuses the stream before
// the request reaches the cache, so nothing is sent to a refused proxy.
func (s *Server) setNode(st *stream, node *corev3.Node, exists bool) (bool, error) {
	if node == nil {
		if st.fleet == "" {
			return false, s.refuse(st, "", status.Error(codes.PermissionDenied, "the first request must name its node"))
		}
		return false, nil // later requests may leave the node out
	}
	cluster := node.GetCluster()
	switch {
	case st.fleet != "" && cluster != st.fleet:
		return false, s.refuse(st, cluster, status.Errorf(codes.PermissionDenied, "node.cluster %q differs from the stream's fleet %q", cluster, st.fleet))
	case !s.opts.Insecure && cluster != st.identity:
		return false, s.refuse(st, cluster, status.Errorf(codes.PermissionDenied, "node.cluster %q differs from the fleet %q the client certificate names", cluster, st.identity))
	case st.fleet == "" && !exists:
		return false, s.refuse(st, cluster, status.Errorf(codes.PermissionDenied, "fleet %q does not exist", cluster))
	}
	if st.fleet != "" {
		return false, nil
	}
	st.node, st.fleet = node.GetId(), cluster
	s.metrics.proxies.WithLabelValues(st.fleet).Inc()
	s.metrics.joined(st.fleet)
	return true, nil
}

// existsToJoin asks FleetExists, outside the server's lock (it may read a
// cache), about the fleet a stream that has not joined one yet claims.
func (s *Server) existsToJoin(id streamKey, node *corev3.Node) bool {
	s.mu.Lock()
	st := s.streams[id]
	joined := st != nil && st.fleet != ""
	s.mu.Unlock()
	if joined || node == nil {
		return true // not asked
	}
	return s.fleetExists(node.GetCluster())
}

func (s *Server) fleetExists(fleet string) bool {
	if fleet == "" {
		return false
	}
	return s.opts.FleetExists == nil || s.opts.FleetExists(fleet)
}

// refuse counts and logs a refused stream. Names a client claims are not
// metric labels: only fleets that exist ever become one.
func (s *Server) refuse(st *stream, claimed string, err error) error {
	s.metrics.refused.Inc()
	s.log.Info("refused an xDS stream", "reason", status.Convert(err).Message(), "certificateFleet", st.identity, "claimedCluster", claimed)
	return err
}

// open starts tracking a stream; on a secure server the client must have
// presented a verified certificate that names a fleet.
func (s *Server) open(ctx context.Context, id int64, delta bool) error {
	st := newStream(delta)
	s.mu.Lock()
	s.streams[streamKey{delta, id}] = st
	s.mu.Unlock()
	if s.opts.Insecure {
		return nil
	}
	fleet, err := xdstransport.PeerFleet(ctx)
	if err != nil {
		return s.refuse(st, "", status.Errorf(codes.PermissionDenied, "xDS needs a client certificate naming a fleet: %v", err))
	}
	s.mu.Lock()
	st.identity = fleet
	s.mu.Unlock()
	return nil
}

// --- go-control-plane callbacks ---

var _ serverv3.Callbacks = (*Server)(nil)

func (s *Server) OnStreamOpen(ctx context.Context, id int64, _ string) error {
	return s.open(ctx, id, false)
}

func (s *Server) OnDeltaStreamOpen(ctx context.Context, id int64, _ string) error {
	return s.open(ctx, id, true)
}

func (s *Server) closed(id streamKey) {
	s.mu.Lock()
	st := s.streams[id]
	delete(s.streams, id)
	if st != nil && st.pendingReq != nil {
		delete(s.deltaReqs, st.pendingReq)
	}
	s.mu.Unlock()
	if st != nil && st.fleet != "" {
		s.metrics.proxies.WithLabelValues(st.fleet).Dec()
		s.proxiesChanged(st.fleet)
		// The remaining proxies may now all be current.
		s.checkAcked(st.fleet)
	}
}

func (s *Server) OnStreamClosed(id int64, _ *corev3.Node)      { s.closed(streamKey{false, id}) }
func (s *Server) OnDeltaStreamClosed(id int64, _ *corev3.Node) { s.closed(streamKey{true, id}) }

func (s *Server) OnStreamRequest(sid int64, req *discoveryv3.DiscoveryRequest) error {
	id := streamKey{false, sid}
	exists := s.existsToJoin(id, req.GetNode())
	s.mu.Lock()
	st := s.streams[id]
	if st == nil {
		s.mu.Unlock()
		return status.Error(codes.PermissionDenied, "unknown stream")
	}
	joined, err := s.setNode(st, req.GetNode(), exists)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	typ, fleet := req.GetTypeUrl(), st.fleet
	st.types[typ] = true
	var nack *NACK
	if req.GetResponseNonce() != "" {
		if d := req.GetErrorDetail(); d != nil {
			nack = &NACK{Node: st.node, TypeURL: typ, Version: req.GetVersionInfo(), Detail: d.GetMessage()}
			st.nack = nack
		} else {
			st.ackedVersion[typ] = req.GetVersionInfo()
		}
	}
	s.mu.Unlock()
	s.afterRequest(fleet, nack, joined)
	return nil
}

func (s *Server) OnStreamDeltaRequest(sid int64, req *discoveryv3.DeltaDiscoveryRequest) error {
	id := streamKey{true, sid}
	exists := s.existsToJoin(id, req.GetNode())
	s.mu.Lock()
	st := s.streams[id]
	if st == nil {
		s.mu.Unlock()
		return status.Error(codes.PermissionDenied, "unknown stream")
	}
	joined, err := s.setNode(st, req.GetNode(), exists)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	typ, fleet := req.GetTypeUrl(), st.fleet
	// The cache's watch for this request finds the stream by it.
	if st.pendingReq != nil {
		delete(s.deltaReqs, st.pendingReq)
	}
	st.pendingReq = req
	s.deltaReqs[req] = st
	all := false // every name of the type to be rechecked
	recheck := slices.Concat(req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe())
	if !st.types[typ] {
		all = true
		st.types[typ] = true
		// An empty first subscription is a wildcard for the types that have one.
		if len(req.GetResourceNamesSubscribe()) == 0 && (typ == resource.ListenerType || typ == resource.ClusterType) {
			st.wildcard[typ] = true
		}
		if st.ackedResources[typ] == nil {
			st.ackedResources[typ] = map[string]string{}
		}
		for name, v := range req.GetInitialResourceVersions() {
			st.ackedResources[typ][name] = v
		}
	}
	if st.names[typ] == nil {
		st.names[typ] = map[string]bool{}
	}
	for _, n := range req.GetResourceNamesSubscribe() {
		if n == "*" {
			st.wildcard[typ] = true
			all = true
			continue
		}
		st.names[typ][n] = true
	}
	for _, n := range req.GetResourceNamesUnsubscribe() {
		if n == "*" {
			st.wildcard[typ] = false
			all = true
		}
		delete(st.names[typ], n)
		delete(st.ackedResources[typ], n)
	}
	var nack *NACK
	if nonce := req.GetResponseNonce(); nonce != "" {
		sent, ok := st.sent[nonce]
		delete(st.sent, nonce)
		if d := req.GetErrorDetail(); d != nil {
			nack = &NACK{Node: st.node, TypeURL: typ, Detail: d.GetMessage()}
			st.nack = nack
		} else if ok {
			for name, v := range sent.set {
				st.ackedResources[sent.typ][name] = v
			}
			for _, name := range sent.removed {
				delete(st.ackedResources[sent.typ], name)
			}
			if sent.typ != typ {
				st.recheck(s.fleetState(fleet), sent.typ, slices.Concat(slices.Collect(maps.Keys(sent.set)), sent.removed))
			} else {
				recheck = slices.Concat(recheck, slices.Collect(maps.Keys(sent.set)), sent.removed)
			}
		}
	}
	if all {
		st.recheckAll(s.fleetState(fleet), typ)
	} else {
		st.recheck(s.fleetState(fleet), typ, recheck)
	}
	s.mu.Unlock()
	s.afterRequest(fleet, nack, joined)
	return nil
}

func (s *Server) afterRequest(fleet string, nack *NACK, joined bool) {
	if joined {
		s.proxiesChanged(fleet)
	}
	if nack != nil {
		s.nacked(fleet, *nack)
		s.metrics.nacks.WithLabelValues(fleet, nack.TypeURL).Inc()
		s.log.Info("proxy refused configuration (NACK); it keeps its last good one",
			"fleet", fleet, "node", nack.Node, "type", nack.TypeURL, "version", nack.Version, "detail", nack.Detail)
		return
	}
	if fleet != "" {
		s.checkAcked(fleet)
	}
}

func (s *Server) OnStreamResponse(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
	s.mu.Lock()
	fleet := ""
	if st := s.streams[streamKey{false, id}]; st != nil {
		fleet = st.fleet
	}
	s.mu.Unlock()
	s.metrics.pushes.WithLabelValues(fleet, resp.GetTypeUrl()).Inc()
	s.metrics.pushedResources.WithLabelValues(fleet, resp.GetTypeUrl()).Add(float64(len(resp.GetResources())))
}

func (s *Server) OnStreamDeltaResponse(id int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
	s.mu.Lock()
	fleet := ""
	if st := s.streams[streamKey{true, id}]; st != nil {
		fleet = st.fleet
		sent := deltaSent{typ: resp.GetTypeUrl(), set: map[string]string{}, removed: resp.GetRemovedResources()}
		for _, r := range resp.GetResources() {
			sent.set[r.GetName()] = r.GetVersion()
		}
		st.sent[resp.GetNonce()] = sent
	}
	s.mu.Unlock()
	s.metrics.pushes.WithLabelValues(fleet, resp.GetTypeUrl()).Inc()
	s.metrics.pushedResources.WithLabelValues(fleet, resp.GetTypeUrl()).Add(float64(len(resp.GetResources()) + len(resp.GetRemovedResources())))
}

func (s *Server) OnFetchRequest(context.Context, *discoveryv3.DiscoveryRequest) error           { return nil }
func (s *Server) OnFetchResponse(*discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse) {}

// NACKs returns the last refusal of each connected proxy of a fleet.
func (s *Server) NACKs(fleet string) []NACK {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []NACK
	for _, st := range s.streams {
		if st.fleet == fleet && st.nack != nil {
			out = append(out, *st.nack)
		}
	}
	return out
}

// ConnectedProxies counts the proxies of a fleet with an open stream.
func (s *Server) ConnectedProxies(fleet string) int {
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
