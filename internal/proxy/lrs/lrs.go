// Package lrs is fleetlb-proxy's Load Reporting Service client
// (envoy.service.load_stats.v3): over the xDS connection it tells the
// management server, per cluster, locality and priority, how many requests
// (for TCP: connections) each received, as Envoy's load stats reporter does.
// The manager reads from it which tenant cluster serves a global backend.
package lrs

import (
	"context"
	"math/rand/v2"
	"slices"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	loadstatsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Source returns, and resets, the load of the named clusters (every
// cluster with all) since its last call.
type Source interface {
	LoadStats(clusters []string, all bool, interval time.Duration) []*endpointv3.ClusterStats
}

// Options of a Client; zero values take the defaults.
type Options struct {
	// MinBackoff and MaxBackoff bound reconnects (100 ms, 30 s).
	MinBackoff, MaxBackoff time.Duration
	// MinInterval bounds the report interval the server may ask for (100 ms).
	MinInterval time.Duration
}

// Client keeps one StreamLoadStats stream open.
type Client struct {
	conn grpc.ClientConnInterface
	node *corev3.Node
	src  Source
	opts Options
	log  logr.Logger
}

// New returns a client; Run starts it.
func New(conn grpc.ClientConnInterface, node *corev3.Node, src Source, opts Options, log logr.Logger) *Client {
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 30 * time.Second
	}
	if opts.MinInterval <= 0 {
		opts.MinInterval = 100 * time.Millisecond
	}
	return &Client{conn: conn, node: node, src: src, opts: opts, log: log}
}

// Run reports until ctx ends, reconnecting with jittered exponential
// backoff. A server without LRS (Unimplemented) is asked again only every
// MaxBackoff.
func (c *Client) Run(ctx context.Context) error {
	backoff := c.opts.MinBackoff
	for {
		start := time.Now()
		err := c.stream(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Since(start) > c.opts.MaxBackoff {
			backoff = c.opts.MinBackoff
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		if status.Code(err) == codes.Unimplemented {
			wait = c.opts.MaxBackoff
		}
		c.log.V(1).Info("load reporting stream ended, reconnecting", "error", err, "after", wait)
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

// settings are what the server's last LoadStatsResponse asked for.
type settings struct {
	clusters []string
	all      bool
	interval time.Duration
}

func (c *Client) stream(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := loadstatsv3.NewLoadReportingServiceClient(c.conn).StreamLoadStats(ctx)
	if err != nil {
		return err
	}
	if err := s.Send(&loadstatsv3.LoadStatsRequest{Node: c.node}); err != nil {
		return err
	}
	responses := make(chan settings, 1)
	recvErr := make(chan error, 1)
	go func() {
		for {
			r, err := s.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			next := settings{clusters: slices.Clone(r.GetClusters()), all: r.GetSendAllClusters(),
				interval: max(r.GetLoadReportingInterval().AsDuration(), c.opts.MinInterval)}
			select { // only the newest settings matter
			case <-responses:
			default:
			}
			responses <- next
		}
	}()
	var cur settings
	var tick <-chan time.Time
	var ticker *time.Ticker
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
	}()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-recvErr:
			return err
		case cur = <-responses:
			if ticker == nil {
				// As Envoy: the first report covers the time since the
				// server answered, not what came before.
				c.src.LoadStats(cur.clusters, cur.all, 0)
				last = time.Now()
				ticker = time.NewTicker(cur.interval)
				tick = ticker.C
			} else {
				ticker.Reset(cur.interval)
			}
		case now := <-tick:
			stats := c.src.LoadStats(cur.clusters, cur.all, now.Sub(last))
			last = now
			if err := s.Send(&loadstatsv3.LoadStatsRequest{Node: c.node, ClusterStats: stats}); err != nil {
				return err
			}
		}
	}
}
