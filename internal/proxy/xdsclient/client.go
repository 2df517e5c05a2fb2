// Package xdsclient is an ADS client (state-of-the-world or incremental/delta xDS)
// that subscribes like Envoy: LDS and CDS as wildcards, EDS/RDS/SDS for the names
// the caller asks for. Every response is handed to a Handler as the complete set of
// resources of its type; the Handler's error turns the response into a NACK and the
// previous set stays in force.
package xdsclient

import (
	"context"
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

// Options configure a Client.
type Options struct {
	Node  *corev3.Node
	Delta bool // incremental xDS instead of state of the world
	// Backoff bounds between reconnect attempts; zero values mean 100ms and 5s.
	MinBackoff, MaxBackoff time.Duration
	// OnResponse, if set, is called after every response with the outcome (for metrics).
	OnResponse func(typeURL string, err error)
}

// Client is one ADS stream (reconnected as needed).
type Client struct {
	conn    grpc.ClientConnInterface
	opts    Options
	handler Handler
	log     logr.Logger

	mu       sync.Mutex
	names    map[string]map[string]bool // subscribed names of non-wildcard types
	acked    map[string]string          // type → last ACKed version_info
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

// New returns a client; Run starts it.
func New(conn grpc.ClientConnInterface, h Handler, opts Options, log logr.Logger) *Client {
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Second
	}
	return &Client{
		conn: conn, opts: opts, handler: h, log: log,
		names: map[string]map[string]bool{},
		acked: map[string]string{},
		wake:  make(chan struct{}, 1),
	}
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
	changed := !maps.Equal(set, c.names[typeURL])
	if changed {
		c.names[typeURL] = set
	}
	c.mu.Unlock()
	if changed {
		select {
		case c.wake <- struct{}{}:
		default:
		}
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

func (c *Client) subscribed(typeURL string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.names[typeURL]))
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

// state is what the client accepted, per type; it survives reconnects.
type state struct {
	resources map[string]map[string]proto.Message
	versions  map[string]map[string]string // delta: per-resource versions
}

func newState() *state {
	return &state{resources: map[string]map[string]proto.Message{}, versions: map[string]map[string]string{}}
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
	syncNames := func() error {
		for _, t := range subscribeOrder {
			if wildcardTypes[t] {
				continue
			}
			names := c.subscribed(t)
			if slices.Equal(names, sentNames[t]) || (len(names) == 0 && sentNames[t] == nil) {
				continue
			}
			sentNames[t] = names
			if len(names) == 0 {
				// Forget what is no longer wanted.
				if len(st.resources[t]) > 0 {
					c.apply(t, map[string]proto.Message{}, st)
				}
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
			decoded, derr := decode(resp.GetResources())
			if derr == nil && !wildcardTypes[t] {
				want := c.subscribed(t)
				for name := range decoded {
					if !slices.Contains(want, name) {
						delete(decoded, name)
					}
				}
			}
			if derr == nil {
				derr = c.apply(t, decoded, st)
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

	sentNames := map[string][]string{}
	// Initial requests carry the versions we hold so the server sends only differences.
	for _, t := range subscribeOrder {
		names := c.subscribed(t)
		if !wildcardTypes[t] && len(names) == 0 {
			continue
		}
		req := &discoveryv3.DeltaDiscoveryRequest{
			Node: c.opts.Node, TypeUrl: t,
			InitialResourceVersions: maps.Clone(st.versions[t]),
		}
		if wildcardTypes[t] {
			req.ResourceNamesSubscribe = []string{"*"}
		} else {
			req.ResourceNamesSubscribe = names
			sentNames[t] = names
		}
		if err := stream.Send(req); err != nil {
			return err
		}
	}
	syncNames := func() error {
		for _, t := range subscribeOrder {
			if wildcardTypes[t] {
				continue
			}
			names := c.subscribed(t)
			old := sentNames[t]
			if slices.Equal(names, old) {
				continue
			}
			var sub, unsub []string
			for _, n := range names {
				if !slices.Contains(old, n) {
					sub = append(sub, n)
				}
			}
			for _, n := range old {
				if !slices.Contains(names, n) {
					unsub = append(unsub, n)
				}
			}
			sentNames[t] = names
			if len(unsub) > 0 {
				// Drop unsubscribed resources locally right away.
				next := maps.Clone(st.resources[t])
				for _, n := range unsub {
					delete(next, n)
					delete(st.versions[t], n)
				}
				c.apply(t, next, st)
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
			next := maps.Clone(st.resources[t])
			if next == nil {
				next = map[string]proto.Message{}
			}
			versions := maps.Clone(st.versions[t])
			if versions == nil {
				versions = map[string]string{}
			}
			var derr error
			for _, r := range resp.GetResources() {
				if r.GetResource() == nil {
					continue // a name-only heartbeat
				}
				m, err := r.GetResource().UnmarshalNew()
				if err != nil {
					derr = fmt.Errorf("resource %q: %w", r.GetName(), err)
					break
				}
				next[r.GetName()] = m
				versions[r.GetName()] = r.GetVersion()
			}
			for _, n := range resp.GetRemovedResources() {
				delete(next, n)
				delete(versions, n)
			}
			if derr == nil {
				derr = c.apply(t, next, st)
			}
			req := &discoveryv3.DeltaDiscoveryRequest{Node: c.opts.Node, TypeUrl: t, ResponseNonce: resp.GetNonce()}
			if derr != nil {
				c.nack(t, resp.GetSystemVersionInfo(), resp.GetNonce(), derr)
				req.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: derr.Error()}
			} else {
				st.versions[t] = versions
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

// apply hands the full set to the handler and, if accepted, records it.
func (c *Client) apply(t string, resources map[string]proto.Message, st *state) error {
	err := c.handler.Handle(t, resources)
	if c.opts.OnResponse != nil {
		c.opts.OnResponse(t, err)
	}
	if err == nil {
		st.resources[t] = resources
	}
	return err
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

func decode(anys []*anypb.Any) (map[string]proto.Message, error) {
	out := make(map[string]proto.Message, len(anys))
	for _, a := range anys {
		m, err := a.UnmarshalNew()
		if err != nil {
			return nil, err
		}
		name, err := resourceName(m)
		if err != nil {
			return nil, err
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("duplicate resource %q", name)
		}
		out[name] = m
	}
	return out, nil
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
