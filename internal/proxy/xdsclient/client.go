// Package xdsclient is an ADS client (state-of-the-world or incremental/delta xDS)
// that subscribes like Envoy: LDS and CDS as wildcards, EDS/RDS/SDS for the names
// the caller asks for. Every response is handed to an Updater as what changed in
// the set of resources of its type (or to a Handler as the complete set); the
// error turns the response into a NACK and the previous set stays in force.
//
// The client keeps no decoded resource: per accepted resource it keeps a digest
// of its encoding (and in delta xDS its version), which is how it tells the
// Updater only what changed, for state of the world as for delta. Types the
// Updater decodes itself (Options.Undecoded) are handed on as sent.
package xdsclient

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/go-logr/logr"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Type URLs the client knows, in the order Envoy applies them.
const (
	ListenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	ClusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	RouteType    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	SecretType   = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
)

// wildcardTypes are subscribed without names (all resources of the type).
var wildcardTypes = map[string]bool{ListenerType: true, ClusterType: true}

// subscribeOrder is the order initial requests go out: CDS before LDS as Envoy does,
// so clusters exist before listeners reference them.
var subscribeOrder = []string{ClusterType, EndpointType, ListenerType, RouteType, SecretType}

// Handler receives the complete set of resources of one type, keyed by name.
// A non-nil error NACKs the response with the error text as error_detail.
// Handle is called from the client's single loop goroutine, one call at a time; it
// may call Client.Watch.
type Handler interface {
	Handle(typeURL string, resources map[string]proto.Message) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(typeURL string, resources map[string]proto.Message) error

// Handle calls f.
func (f HandlerFunc) Handle(typeURL string, resources map[string]proto.Message) error {
	return f(typeURL, resources)
}

// Updater receives what a response changed in the set of resources of one
// type: the resources added or changed since the last accepted set (by the
// digest of their encoding; for Options.Undecoded types every resource sent),
// keyed by name, and the names that left it. A
// non-nil error NACKs the response; the Updater must then keep what it had.
// Update is called from the client's single loop goroutine, one call at a
// time (also with nothing changed: every response gets one call); it may call
// Client.Watch.
type Updater interface {
	Update(typeURL string, changed map[string]proto.Message, removed []string) error
}

// UpdaterFunc adapts a function to Updater.
type UpdaterFunc func(typeURL string, changed map[string]proto.Message, removed []string) error

// Update calls f.
func (f UpdaterFunc) Update(typeURL string, changed map[string]proto.Message, removed []string) error {
	return f(typeURL, changed, removed)
}

// fullSets turns updates into complete sets for a Handler; it keeps every
// decoded resource, which an Updater need not.
type fullSets struct {
	h    Handler
	sets map[string]map[string]proto.Message
}

func (f *fullSets) Update(t string, changed map[string]proto.Message, removed []string) error {
	next := maps.Clone(f.sets[t])
	if next == nil {
		next = map[string]proto.Message{}
	}
	for _, n := range removed {
		delete(next, n)
	}
	maps.Copy(next, changed)
	if err := f.h.Handle(t, next); err != nil {
		return err
	}
	f.sets[t] = next
	return nil
}

// Options configure a Client.
type Options struct {
	Node  *corev3.Node
	Delta bool // incremental xDS instead of state of the world
	// Backoff bounds between reconnect attempts; zero values mean 100ms and 5s.
	MinBackoff, MaxBackoff time.Duration
	// OnResponse, if set, is called after every response with the outcome (for metrics).
	OnResponse func(typeURL string, err error)
	// Undecoded are type URLs whose resources the Updater gets as the
	// *anypb.Any the server sent, neither decoded nor digested: every
	// resource a response carries is handed on and the Updater compares it
	// with what it has (a big resource of which little changed then costs
	// what changed, not a decode). Their names must be field 1 (name), as
	// in every xDS resource type.
	Undecoded []string
}

// Client is one ADS stream (reconnected as needed).
type Client struct {
	conn    grpc.ClientConnInterface
	opts    Options
	handler Updater
	log     logr.Logger

	mu sync.Mutex
	// subs are the names subscribed per non-wildcard type, and dirty the
	// names whose subscription changed since the stream last told the
	// server, so that a change costs what it names, not the whole
	// subscription.
	subs     map[string]map[string]subscription
	dirty    map[string]map[string]bool
	acked    map[string]string // type → last ACKed version_info
	lastNACK *NACK
	wake     chan struct{} // a Watch changed names
}

// NACK is the last response the client rejected.
type NACK struct {
	TypeURL string
	Version string
	Nonce   string
	Detail  string
}

// New returns a client that hands h complete sets; Run starts it.
func New(conn grpc.ClientConnInterface, h Handler, opts Options, log logr.Logger) *Client {
	return NewUpdating(conn, &fullSets{h: h, sets: map[string]map[string]proto.Message{}}, opts, log)
}

// NewUpdating returns a client that hands u what changed; Run starts it.
func NewUpdating(conn grpc.ClientConnInterface, u Updater, opts Options, log logr.Logger) *Client {
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Second
	}
	return &Client{
		conn: conn, opts: opts, handler: u, log: log,
		subs:  map[string]map[string]subscription{},
		dirty: map[string]map[string]bool{},
		acked: map[string]string{},
		wake:  make(chan struct{}, 1),
	}
}

// subscription is one name of a non-wildcard type.
type subscription struct {
	refs int32 // subscribed while > 0
	told bool  // the open stream told the server it is subscribed (delta)
}

// Watch sets the names subscribed for a non-wildcard type (EDS, RDS, SDS). Resources
// not named are dropped from what the Handler sees.
func (c *Client) Watch(typeURL string, names []string) {
	if wildcardTypes[typeURL] {
		return
	}
	set := make(map[string]bool, len(names))
	for _, n := range names {
		set[n] = true
	}
	c.mu.Lock()
	subs, dirty := c.typeLocked(typeURL)
	changed := false
	for n, e := range subs {
		if e.refs > 0 && !set[n] {
			e.refs = 0
			subs[n], dirty[n], changed = e, true, true
		}
	}
	for n := range set {
		if e := subs[n]; e.refs != 1 {
			if e.refs == 0 {
				dirty[n], changed = true, true
			}
			e.refs = 1
			subs[n] = e
		}
	}
	c.mu.Unlock()
	if changed {
		c.wakeUp()
	}
}

// WatchChanges adds a reference to each name of add and drops one from each
// of remove, for a non-wildcard type: a name is subscribed while it has
// references. Its cost, and that of telling the server in delta xDS, is
// proportional to the names given.
func (c *Client) WatchChanges(typeURL string, add, remove []string) {
	if wildcardTypes[typeURL] || len(add)+len(remove) == 0 {
		return
	}
	c.mu.Lock()
	subs, dirty := c.typeLocked(typeURL)
	changed := false
	for _, n := range add {
		e := subs[n]
		if e.refs++; e.refs == 1 {
			dirty[n], changed = true, true
		}
		subs[n] = e
	}
	for _, n := range remove {
		e, ok := subs[n]
		if !ok || e.refs == 0 {
			continue
		}
		if e.refs--; e.refs == 0 {
			dirty[n], changed = true, true
		}
		subs[n] = e
	}
	c.mu.Unlock()
	if changed {
		c.wakeUp()
	}
}

func (c *Client) typeLocked(typeURL string) (map[string]subscription, map[string]bool) {
	if c.subs[typeURL] == nil {
		c.subs[typeURL], c.dirty[typeURL] = map[string]subscription{}, map[string]bool{}
	}
	return c.subs[typeURL], c.dirty[typeURL]
}

func (c *Client) wakeUp() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// AckedVersions returns the last ACKed version_info per type URL (SotW; in delta mode
// the system_version_info, which servers may leave empty).
func (c *Client) AckedVersions() map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.acked)
}

// LastNACK returns the most recent rejected response, or nil.
func (c *Client) LastNACK() *NACK {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lastNACK == nil {
		return nil
	}
	n := *c.lastNACK
	return &n
}

// Subscribed is the sorted list of names subscribed for a non-wildcard type.
func (c *Client) Subscribed(typeURL string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for n, e := range c.subs[typeURL] {
		if e.refs > 0 {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// wanted is the set of names subscribed for a type.
func (c *Client) wanted(typeURL string) map[string]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]bool, len(c.subs[typeURL]))
	for n, e := range c.subs[typeURL] {
		if e.refs > 0 {
			out[n] = true
		}
	}
	return out
}

// takeChanges returns what the open stream has yet to tell the server of a
// type's subscription (delta: the names to subscribe and to unsubscribe),
// and whether anything changed since the last call, and forgets it.
func (c *Client) takeChanges(typeURL string) (sub, unsub []string, changed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	subs, dirty := c.subs[typeURL], c.dirty[typeURL]
	if len(dirty) == 0 {
		return nil, nil, false
	}
	for n := range dirty {
		e := subs[n]
		switch {
		case e.refs > 0 && !e.told:
			sub = append(sub, n)
			e.told = true
			subs[n] = e
		case e.refs == 0 && e.told:
			unsub = append(unsub, n)
			delete(subs, n)
		case e.refs == 0:
			delete(subs, n)
		}
	}
	c.forgetChangesLocked(typeURL)
	slices.Sort(sub)
	slices.Sort(unsub)
	return sub, unsub, true
}

// takeAll returns the names subscribed for a type, as told to a new stream,
// and forgets what changed.
func (c *Client) takeAll(typeURL string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for n, e := range c.subs[typeURL] {
		if e.refs == 0 {
			delete(c.subs[typeURL], n)
			continue
		}
		e.told = true
		c.subs[typeURL][n] = e
		out = append(out, n)
	}
	c.forgetChangesLocked(typeURL)
	slices.Sort(out)
	return out
}

// forgetChangesLocked empties a type's dirty set; a big one (the first
// subscription) is dropped rather than kept empty at its size.
func (c *Client) forgetChangesLocked(typeURL string) {
	if len(c.dirty[typeURL]) > 64 {
		c.dirty[typeURL] = map[string]bool{}
		return
	}
	clear(c.dirty[typeURL])
}

// Run keeps an ADS stream open until ctx ends, reconnecting with bounded, jittered
// exponential backoff. Accepted state is kept across reconnects, so the data plane
// keeps serving while the server is away.
func (c *Client) Run(ctx context.Context) error {
	backoff := c.opts.MinBackoff
	st := newState()
	for {
		start := time.Now()
		var err error
		if c.opts.Delta {
			err = c.runDelta(ctx, st)
		} else {
			err = c.runSotW(ctx, st)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// A stream that lived a while was healthy: start the backoff again.
		if time.Since(start) > c.opts.MaxBackoff {
			backoff = c.opts.MinBackoff
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		c.log.Info("ADS stream ended, reconnecting", "error", err, "after", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(backoff*2, c.opts.MaxBackoff)
	}
}

// digest identifies a resource's content: the SHA-256 of its encoding (servers
// marshal deterministically, as go-control-plane and fleetlb's do).
type digest [sha256.Size]byte

// state is what the client accepted, per type; it survives reconnects.
type state struct {
	resources map[string]map[string]digest
	versions  map[string]map[string]string // delta: per-resource versions
}

func newState() *state {
	return &state{resources: map[string]map[string]digest{}, versions: map[string]map[string]string{}}
}

// update is what one response changes in a type's accepted set.
type update struct {
	changed map[string]proto.Message
	digests map[string]digest // of changed
	removed []string
}

func newUpdate() *update {
	return &update{changed: map[string]proto.Message{}, digests: map[string]digest{}}
}

// add records a resource of the response; an unchanged one is not decoded
// again unless it must be (SotW: its name is inside).
func (u *update) add(name string, d digest, m proto.Message) {
	u.changed[name], u.digests[name] = m, d
}

// streamEvent is one message from the receive goroutine.
type streamEvent struct {
	sotw  *discoveryv3.DiscoveryResponse
	delta *discoveryv3.DeltaDiscoveryResponse
	err   error
}

func (c *Client) recvLoop(ctx context.Context, recv func() (streamEvent, error), out chan<- streamEvent) {
	for {
		ev, err := recv()
		if err != nil {
			ev = streamEvent{err: err}
		}
		select {
		case out <- ev:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

func (c *Client) runSotW(ctx context.Context, st *state) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(c.conn).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	events := make(chan streamEvent)
	go c.recvLoop(ctx, func() (streamEvent, error) {
		r, err := stream.Recv()
		return streamEvent{sotw: r}, err
	}, events)

	sentNames := map[string][]string{} // what the server was last told per type
	nonces := map[string]string{}
	send := func(typeURL, version, nonce string, names []string, detail error) error {
		req := &discoveryv3.DiscoveryRequest{
			Node: c.opts.Node, TypeUrl: typeURL, VersionInfo: version,
			ResponseNonce: nonce, ResourceNames: names,
		}
		if detail != nil {
			req.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: detail.Error()}
		}
		return stream.Send(req)
	}
	// syncNames sends a request for each non-wildcard type whose names changed. An
	// empty list is never sent (it would mean wildcard); the local filter drops
	// unsubscribed resources instead.
	synced := map[string]bool{} // the type's names were compared once on this stream
	syncNames := func() error {
		for _, t := range subscribeOrder {
			if wildcardTypes[t] {
				continue
			}
			// State of the world sends the whole list, but only when it changed.
			if _, _, changed := c.takeChanges(t); synced[t] && !changed {
				continue
			}
			synced[t] = true
			names := c.Subscribed(t)
			if slices.Equal(names, sentNames[t]) || (len(names) == 0 && sentNames[t] == nil) {
				continue
			}
			sentNames[t] = names
			// Forget what is no longer wanted now: the server answers a
			// narrower subscription only when something else changes.
			u := newUpdate()
			for n := range st.resources[t] {
				if _, ok := slices.BinarySearch(names, n); !ok {
					u.removed = append(u.removed, n)
				}
			}
			if len(u.removed) > 0 {
				slices.Sort(u.removed)
				c.apply(t, u, st)
			}
			if len(names) == 0 {
				continue
			}
			if err := send(t, c.ackedVersion(t), nonces[t], names, nil); err != nil {
				return err
			}
		}
		return nil
	}
	// A fresh stream asks for everything with an empty version, so a reconnecting
	// proxy always receives the server's current snapshot.
	for _, t := range subscribeOrder {
		if wildcardTypes[t] {
			if err := send(t, "", "", nil, nil); err != nil {
				return err
			}
		}
	}
	if err := syncNames(); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.wake:
			if err := syncNames(); err != nil {
				return err
			}
		case ev := <-events:
			if ev.err != nil {
				return ev.err
			}
			resp := ev.sotw
			t := resp.GetTypeUrl()
			nonces[t] = resp.GetNonce()
			var want map[string]bool
			if !wildcardTypes[t] {
				want = c.wanted(t)
			}
			u, derr := sotwUpdate(resp.GetResources(), st.resources[t], want, !wildcardTypes[t], c.undecoded(t))
			if derr == nil {
				derr = c.apply(t, u, st)
			}
			if derr != nil {
				c.nack(t, resp.GetVersionInfo(), resp.GetNonce(), derr)
				if err := send(t, c.ackedVersion(t), resp.GetNonce(), sentNames[t], derr); err != nil {
					return err
				}
			} else {
				c.ack(t, resp.GetVersionInfo())
				if err := send(t, resp.GetVersionInfo(), resp.GetNonce(), sentNames[t], nil); err != nil {
					return err
				}
			}
			// The handler may have changed what we watch (CDS → EDS, LDS → RDS/SDS).
			if err := syncNames(); err != nil {
				return err
			}
		}
	}
}

func (c *Client) runDelta(ctx context.Context, st *state) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(c.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	events := make(chan streamEvent)
	go c.recvLoop(ctx, func() (streamEvent, error) {
		r, err := stream.Recv()
		return streamEvent{delta: r}, err
	}, events)

	// Initial requests carry the versions we hold so the server sends only differences.
	for _, t := range subscribeOrder {
		var names []string
		if !wildcardTypes[t] {
			names = c.takeAll(t)
			// What was unsubscribed while no stream was open goes now.
			u := newUpdate()
			for n := range st.resources[t] {
				if _, ok := slices.BinarySearch(names, n); !ok {
					u.removed = append(u.removed, n)
					delete(st.versions[t], n)
				}
			}
			if len(u.removed) > 0 {
				slices.Sort(u.removed)
				c.apply(t, u, st)
			}
			if len(names) == 0 {
				continue
			}
		}
		req := &discoveryv3.DeltaDiscoveryRequest{
			Node: c.opts.Node, TypeUrl: t,
			InitialResourceVersions: maps.Clone(st.versions[t]),
		}
		if wildcardTypes[t] {
			req.ResourceNamesSubscribe = []string{"*"}
		} else {
			req.ResourceNamesSubscribe = names
		}
		if err := stream.Send(req); err != nil {
			return err
		}
	}
	// syncNames tells the server what changed in the subscriptions: the work
	// is proportional to the names that changed.
	syncNames := func() error {
		for _, t := range subscribeOrder {
			if wildcardTypes[t] {
				continue
			}
			sub, unsub, _ := c.takeChanges(t)
			if len(sub)+len(unsub) == 0 {
				continue
			}
			if len(unsub) > 0 {
				// Drop unsubscribed resources locally right away.
				u := newUpdate()
				for _, n := range unsub {
					if _, ok := st.resources[t][n]; ok {
						u.removed = append(u.removed, n)
					}
					delete(st.versions[t], n)
				}
				c.apply(t, u, st)
			}
			if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{
				Node: c.opts.Node, TypeUrl: t,
				ResourceNamesSubscribe: sub, ResourceNamesUnsubscribe: unsub,
			}); err != nil {
				return err
			}
		}
		return nil
	}
	if err := syncNames(); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.wake:
			if err := syncNames(); err != nil {
				return err
			}
		case ev := <-events:
			if ev.err != nil {
				return ev.err
			}
			resp := ev.delta
			t := resp.GetTypeUrl()
			u, derr := deltaUpdate(resp, st.resources[t], c.undecoded(t))
			if derr == nil {
				derr = c.apply(t, u, st)
			}
			req := &discoveryv3.DeltaDiscoveryRequest{Node: c.opts.Node, TypeUrl: t, ResponseNonce: resp.GetNonce()}
			if derr != nil {
				c.nack(t, resp.GetSystemVersionInfo(), resp.GetNonce(), derr)
				req.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: derr.Error()}
			} else {
				versions := st.versions[t]
				if versions == nil {
					versions = map[string]string{}
					st.versions[t] = versions
				}
				for _, r := range resp.GetResources() {
					if r.GetResource() != nil {
						versions[r.GetName()] = r.GetVersion()
					}
				}
				for _, n := range resp.GetRemovedResources() {
					delete(versions, n)
				}
				c.ack(t, resp.GetSystemVersionInfo())
			}
			if err := stream.Send(req); err != nil {
				return err
			}
			if err := syncNames(); err != nil {
				return err
			}
		}
	}
}

// apply hands the update to the handler and, if accepted, records it.
func (c *Client) apply(t string, u *update, st *state) error {
	err := c.handler.Update(t, u.changed, u.removed)
	if c.opts.OnResponse != nil {
		c.opts.OnResponse(t, err)
	}
	if err == nil {
		set := st.resources[t]
		if set == nil {
			set = map[string]digest{}
			st.resources[t] = set
		}
		for _, n := range u.removed {
			delete(set, n)
		}
		maps.Copy(set, u.digests)
	}
	return err
}

func (c *Client) undecoded(typeURL string) bool { return slices.Contains(c.opts.Undecoded, typeURL) }

// sotwUpdate compares a state-of-the-world response with the accepted set:
// the response is the complete set (of the subscribed names when filter).
// Undecoded resources are all handed on.
func sotwUpdate(anys []*anypb.Any, accepted map[string]digest, want map[string]bool, filter, undecoded bool) (*update, error) {
	u := newUpdate()
	seen := make(map[string]bool, len(anys))
	for _, a := range anys {
		var m proto.Message = a
		var name string
		var err error
		if undecoded {
			name, err = wireName(a.GetValue())
		} else if m, err = a.UnmarshalNew(); err == nil {
			name, err = resourceName(m)
		}
		if err != nil {
			return nil, err
		}
		if seen[name] {
			return nil, fmt.Errorf("duplicate resource %q", name)
		}
		seen[name] = true
		if filter && !want[name] {
			delete(seen, name) // not subscribed: dropped as if absent
			continue
		}
		if undecoded {
			u.add(name, digest{}, m)
			continue
		}
		d := sha256.Sum256(a.GetValue())
		if old, ok := accepted[name]; !ok || old != d {
			u.add(name, d, m)
		}
	}
	for n := range accepted {
		if !seen[n] {
			u.removed = append(u.removed, n)
		}
	}
	slices.Sort(u.removed)
	return u, nil
}

// deltaUpdate is what a delta response changes; a resource sent again with the
// content already accepted is not decoded. Undecoded resources are all handed on.
func deltaUpdate(resp *discoveryv3.DeltaDiscoveryResponse, accepted map[string]digest, undecoded bool) (*update, error) {
	u := newUpdate()
	for _, r := range resp.GetResources() {
		if r.GetResource() == nil {
			continue // a name-only heartbeat
		}
		if undecoded {
			u.add(r.GetName(), digest{}, r.GetResource())
			continue
		}
		d := sha256.Sum256(r.GetResource().GetValue())
		if old, ok := accepted[r.GetName()]; ok && old == d {
			delete(u.changed, r.GetName()) // sent twice in one response: the last wins
			delete(u.digests, r.GetName())
			continue
		}
		m, err := r.GetResource().UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("resource %q: %w", r.GetName(), err)
		}
		u.add(r.GetName(), d, m)
	}
	for _, n := range resp.GetRemovedResources() {
		delete(u.changed, n)
		delete(u.digests, n)
		if _, ok := accepted[n]; ok {
			u.removed = append(u.removed, n)
		}
	}
	return u, nil
}

func (c *Client) ack(t, version string) {
	c.mu.Lock()
	c.acked[t] = version
	c.mu.Unlock()
}

func (c *Client) ackedVersion(t string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.acked[t]
}

func (c *Client) nack(t, version, nonce string, err error) {
	c.log.Info("NACK", "type", t, "version", version, "error", err.Error())
	c.mu.Lock()
	c.lastNACK = &NACK{TypeURL: t, Version: version, Nonce: nonce, Detail: err.Error()}
	c.mu.Unlock()
}

// wireName is field 1 of an encoded resource: its name (cluster_name for
// endpoints); the last occurrence wins, as in decoding.
func wireName(b []byte) (string, error) {
	var name string
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", fmt.Errorf("decoding a resource: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return "", fmt.Errorf("decoding a resource: %w", protowire.ParseError(n))
			}
			name, b = string(v), b[n:]
			continue
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return "", fmt.Errorf("decoding a resource: %w", protowire.ParseError(n))
		}
		b = b[n:]
	}
	if name == "" {
		return "", errors.New("a resource has no name")
	}
	return name, nil
}

// resourceName is the xDS name of a resource (cluster_name for endpoints).
func resourceName(m proto.Message) (string, error) {
	switch r := m.(type) {
	case interface{ GetClusterName() string }:
		return r.GetClusterName(), nil
	case interface{ GetName() string }:
		return r.GetName(), nil
	}
	return "", fmt.Errorf("resource %s has no name", m.ProtoReflect().Descriptor().FullName())
}
