// Package proxy is the core of fleetlb-proxy, the Go data plane: it runs the ADS
// client, decides ACK or NACK for every response with the validators of the L4, L7
// and upstream packages, applies what each accepted response changed (its parts
// keep their compiled forms, never the xDS resources), and binds and unbinds one
// socket per Listener resource.
package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/fleetlb/fleetlb/internal/proxy/l4"
	"github.com/fleetlb/fleetlb/internal/proxy/lrs"
	"github.com/fleetlb/fleetlb/internal/proxy/xdsclient"
)

// ClusterManager is the upstream side; *upstream.Manager satisfies it. Updates
// name only what changed: the clusters (load assignments) added or changed,
// and the names removed; nothing else is touched.
type ClusterManager interface {
	l4.Upstreams
	UpdateClusters(changed []*clusterv3.Cluster, removed []string)
	UpdateLoadAssignments(changed []*endpointv3.ClusterLoadAssignment, removed []string)
}

// Server is one serving listener (l4.TCPListener, l7.Listener).
type Server interface {
	Serve(ln net.Listener) error
	Close() error
}

// HTTPListeners is the L7 side. The core keeps no L7 types: the implementation
// holds the compiled route tables and secrets its listeners look up per request.
type HTTPListeners interface {
	IsHTTPListener(l *listenerv3.Listener) bool
	RouteConfigNames(l *listenerv3.Listener) []string
	SecretNames(l *listenerv3.Listener) []string
	// UpdateRouteConfigs validates and installs the changed route
	// configurations and drops the removed ones; on error nothing changes.
	UpdateRouteConfigs(changed []*routev3.RouteConfiguration, removed []string) error
	// UpdateSecrets validates and installs the changed secrets and drops the
	// removed ones; on error nothing changes.
	UpdateSecrets(changed []*tlsv3.Secret, removed []string) error
	NewListener(l *listenerv3.Listener, log logr.Logger) (Server, error)
}

// EncodedRouteConfigs is an HTTP side that compiles route configurations from
// their encoding (l7.Set): the xDS client then hands RDS resources on
// undecoded, so the one route configuration with every virtual host of the
// fleet, re-sent when one of them changed, costs what changed.
type EncodedRouteConfigs interface {
	// UpdateEncodedRouteConfigs validates and installs the changed route
	// configurations, given by name as encoded, and drops the removed
	// ones; on error nothing changes.
	UpdateEncodedRouteConfigs(changed map[string][]byte, removed []string) error
}

// Options configure a Proxy.
type Options struct {
	Node  *corev3.Node
	Delta bool
	// Clusters is the cluster manager; required.
	Clusters ClusterManager
	// ValidateCluster and ValidateLoadAssignment decide CDS/EDS NACKs (upstream.ValidateCluster…).
	ValidateCluster        func(*clusterv3.Cluster) error
	ValidateLoadAssignment func(*endpointv3.ClusterLoadAssignment) error
	// HTTP serves HTTP listeners; nil NACKs them.
	HTTP HTTPListeners
	// DrainTimeout bounds how long a removed or replaced listener's open connections
	// may continue (Envoy's drain); default 30s.
	DrainTimeout time.Duration
	// MinBackoff/MaxBackoff bound ADS reconnects (defaults in xdsclient).
	MinBackoff, MaxBackoff time.Duration
	// MaxConnections caps open downstream TCP connections over all listeners, as
	// Envoy's overload manager does with envoy.resource_monitors.global_downstream_max_connections:
	// past it a new connection is closed at once. 0: no cap.
	MaxConnections int64
}

// Proxy is one data-plane instance.
type Proxy struct {
	opts   Options
	log    logr.Logger
	client *xdsclient.Client
	lrs    *lrs.Client // nil when the cluster manager keeps no load stats

	ready     chan struct{}
	readyOnce sync.Once
	gotLDS    bool
	gotCDS    bool

	mu        sync.Mutex
	listeners map[string]*boundListener
	byAddress map[string]string // addressKey → the listener bound there
	drains    sync.WaitGroup

	// edsNames is the EDS service name of each cluster: each holds a
	// reference to its name in the client's EDS subscription, as each
	// listener does to the route configurations and secrets it uses.
	edsNames map[string]string

	downstream connLimit
}

// New returns a proxy that talks ADS over conn; Run starts it.
func New(conn grpc.ClientConnInterface, opts Options, log logr.Logger) (*Proxy, error) {
	if opts.Clusters == nil {
		return nil, errors.New("proxy: Options.Clusters is required")
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = 30 * time.Second
	}
	p := &Proxy{opts: opts, log: log, ready: make(chan struct{}), listeners: map[string]*boundListener{}, byAddress: map[string]string{},
		edsNames: map[string]string{}}
	p.downstream.max = opts.MaxConnections
	var undecoded []string
	if _, ok := opts.HTTP.(EncodedRouteConfigs); ok {
		undecoded = append(undecoded, xdsclient.RouteType)
	}
	p.client = xdsclient.NewUpdating(conn, xdsclient.UpdaterFunc(p.handle), xdsclient.Options{
		Node: opts.Node, Delta: opts.Delta, MinBackoff: opts.MinBackoff, MaxBackoff: opts.MaxBackoff, Undecoded: undecoded,
		OnResponse: func(typeURL string, err error) {
			result := "applied"
			if err != nil {
				result = "nacked"
			}
			xdsUpdates.WithLabelValues(shortType(typeURL), result).Inc()
		},
	}, log.WithName("xds"))
	if src, ok := opts.Clusters.(lrs.Source); ok {
		// Load reports go to the same server over the same connection.
		p.lrs = lrs.New(conn, opts.Node, src, lrs.Options{}, log.WithName("lrs"))
	}
	return p, nil
}

// Run serves until ctx ends, then closes every listener.
func (p *Proxy) Run(ctx context.Context) error {
	registerProxy(p)
	defer unregisterProxy(p)
	if p.lrs != nil {
		lctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { _ = p.lrs.Run(lctx); close(done) }()
		defer func() { stop(); <-done }()
	}
	err := p.client.Run(ctx)
	p.mu.Lock()
	for name, bl := range p.listeners {
		p.retire(bl)
		delete(p.listeners, name)
	}
	p.mu.Unlock()
	p.drains.Wait()
	return err
}

// Ready is closed once the first listeners and clusters have been applied.
func (p *Proxy) Ready() <-chan struct{} { return p.ready }

// AckedVersions is the last ACKed version per type URL.
func (p *Proxy) AckedVersions() map[string]string { return p.client.AckedVersions() }

// LastNACK is the most recent rejected response, or nil.
func (p *Proxy) LastNACK() *xdsclient.NACK { return p.client.LastNACK() }

// ListenerAddr is the bound address of a listener (useful with port 0), or nil.
func (p *Proxy) ListenerAddr(name string) net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	if bl, ok := p.listeners[name]; ok {
		return bl.addr()
	}
	return nil
}

// ActiveConnections is the number of open connections (TCP, HTTP) or sessions (UDP)
// per listener name.
func (p *Proxy) ActiveConnections() map[string]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int64, len(p.listeners))
	for name, bl := range p.listeners {
		out[name] = bl.active()
	}
	return out
}

// handle applies what one response changed; the xDS client keeps no decoded
// resource, so neither does the core: each part keeps its compiled form.
func (p *Proxy) handle(typeURL string, changed map[string]proto.Message, removed []string) error {
	names := slices.Sorted(maps.Keys(changed))
	var err error
	switch typeURL {
	case xdsclient.ClusterType:
		err = p.applyClusters(names, changed, removed)
		p.gotCDS = p.gotCDS || err == nil
	case xdsclient.EndpointType:
		err = p.applyEndpoints(names, changed, removed)
	case xdsclient.ListenerType:
		err = p.applyListeners(names, changed, removed)
		p.gotLDS = p.gotLDS || err == nil
	case xdsclient.RouteType:
		err = p.applyRoutes(names, changed, removed)
	case xdsclient.SecretType:
		err = p.applySecrets(names, changed, removed)
	default:
		err = fmt.Errorf("resource type %s is not supported", typeURL)
	}
	if p.gotCDS && p.gotLDS {
		p.readyOnce.Do(func() {
			p.log.Info("first configuration applied")
			close(p.ready)
		})
	}
	return err
}

func (p *Proxy) applyClusters(names []string, res map[string]proto.Message, removed []string) error {
	cs := make([]*clusterv3.Cluster, 0, len(names))
	eds := map[string]string{}
	for _, n := range names {
		c, ok := res[n].(*clusterv3.Cluster)
		if !ok {
			return fmt.Errorf("resource %q is not a Cluster", n)
		}
		if p.opts.ValidateCluster != nil {
			if err := p.opts.ValidateCluster(c); err != nil {
				return err
			}
		}
		cs = append(cs, c)
		if c.GetType() == clusterv3.Cluster_EDS {
			eds[n] = cmp.Or(c.GetEdsClusterConfig().GetServiceName(), c.GetName())
		} else {
			eds[n] = ""
		}
	}
	p.opts.Clusters.UpdateClusters(cs, removed)
	// EDS follows the clusters that changed, not the whole set.
	var watch, unwatch []string
	for _, n := range removed {
		if old, ok := p.edsNames[n]; ok {
			unwatch = append(unwatch, old)
			delete(p.edsNames, n)
		}
	}
	for n, e := range eds {
		old, ok := p.edsNames[n]
		if ok && old == e {
			continue
		}
		if ok {
			unwatch = append(unwatch, old)
			delete(p.edsNames, n)
		}
		if e != "" {
			p.edsNames[n] = e
			watch = append(watch, e)
		}
	}
	p.client.WatchChanges(xdsclient.EndpointType, watch, unwatch)
	return nil
}

func (p *Proxy) applyEndpoints(names []string, res map[string]proto.Message, removed []string) error {
	clas := make([]*endpointv3.ClusterLoadAssignment, 0, len(names))
	for _, n := range names {
		cla, ok := res[n].(*endpointv3.ClusterLoadAssignment)
		if !ok {
			return fmt.Errorf("resource %q is not a ClusterLoadAssignment", n)
		}
		if p.opts.ValidateLoadAssignment != nil {
			if err := p.opts.ValidateLoadAssignment(cla); err != nil {
				return err
			}
		}
		clas = append(clas, cla)
	}
	p.opts.Clusters.UpdateLoadAssignments(clas, removed)
	return nil
}

func (p *Proxy) applyRoutes(names []string, res map[string]proto.Message, removed []string) error {
	if p.opts.HTTP == nil {
		if len(names) > 0 {
			return errors.New("route configurations are not supported: this proxy serves no HTTP")
		}
		return nil
	}
	if enc, ok := p.opts.HTTP.(EncodedRouteConfigs); ok {
		encoded := make(map[string][]byte, len(names))
		for _, n := range names {
			a, ok := res[n].(*anypb.Any)
			if !ok || a.GetTypeUrl() != xdsclient.RouteType {
				return fmt.Errorf("resource %q is not a RouteConfiguration", n)
			}
			encoded[n] = a.GetValue()
		}
		return enc.UpdateEncodedRouteConfigs(encoded, removed)
	}
	rcs := make([]*routev3.RouteConfiguration, 0, len(names))
	for _, n := range names {
		rc, ok := res[n].(*routev3.RouteConfiguration)
		if !ok {
			return fmt.Errorf("resource %q is not a RouteConfiguration", n)
		}
		rcs = append(rcs, rc)
	}
	return p.opts.HTTP.UpdateRouteConfigs(rcs, removed)
}

func (p *Proxy) applySecrets(names []string, res map[string]proto.Message, removed []string) error {
	if p.opts.HTTP == nil {
		if len(names) > 0 {
			return errors.New("secrets are not supported: this proxy serves no HTTP")
		}
		return nil
	}
	ss := make([]*tlsv3.Secret, 0, len(names))
	for _, n := range names {
		s, ok := res[n].(*tlsv3.Secret)
		if !ok {
			return fmt.Errorf("resource %q is not a Secret", n)
		}
		ss = append(ss, s)
	}
	return p.opts.HTTP.UpdateSecrets(ss, removed)
}
