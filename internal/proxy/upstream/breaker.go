package upstream

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// ErrOverflow is a circuit breaker that is full: the HTTP router answers 503
// with x-envoy-overloaded, tcp_proxy closes the downstream connection.
var ErrOverflow = errors.New("upstream overflow (circuit breaker)")

// Envoy's default thresholds, applied when circuit_breakers leaves one unset.
const (
	defaultThreshold  = 1024
	defaultMaxRetries = 3
)

// overflows counts refusals by the breaker that refused (Envoy's
// upstream_cx_overflow, upstream_rq_pending_overflow; max_requests counts
// there too in Envoy, here as "requests").
var overflows = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "fleetlb_proxy_upstream_overflow_total",
	Help: "Upstream connections, sessions, requests and retries refused by a cluster's circuit breaker, by limit (connections, pending, requests, retries).",
}, []string{"limit"})

func init() {
	metrics.Registry.MustRegister(overflows)
	for _, l := range []string{"connections", "pending", "requests", "retries"} {
		overflows.WithLabelValues(l)
	}
}

// breaker is a cluster's DEFAULT-priority circuit breaker: max_connections open
// upstream connections, max_pending_requests requests waiting for a connection,
// max_requests requests in flight.
type breaker struct {
	maxConns, maxPending, maxRequests int64

	mu      sync.Mutex
	conns   int64
	pending int64
	freed   chan struct{} // closed (and replaced) whenever a connection slot frees

	requests atomic.Int64

	// Retries in flight, bounded by maxRetries or, when set, the retry
	// budget: budgetPercent of the requests in flight and pending, at least
	// minRetries.
	retries       atomic.Int64
	maxRetries    int64
	budget        bool
	budgetPercent float64
	minRetries    int64
}

func newBreaker(cb *clusterv3.CircuitBreakers) *breaker {
	b := &breaker{maxConns: defaultThreshold, maxPending: defaultThreshold, maxRequests: defaultThreshold, freed: make(chan struct{}),
		maxRetries: defaultMaxRetries}
	for _, t := range cb.GetThresholds() { // validated: at most one, priority DEFAULT
		if v := t.GetMaxConnections(); v != nil {
			b.maxConns = int64(v.GetValue())
		}
		if v := t.GetMaxPendingRequests(); v != nil {
			b.maxPending = int64(v.GetValue())
		}
		if v := t.GetMaxRequests(); v != nil {
			b.maxRequests = int64(v.GetValue())
		}
		if v := t.GetMaxRetries(); v != nil {
			b.maxRetries = int64(v.GetValue())
		}
		if rb := t.GetRetryBudget(); rb != nil {
			// Envoy's defaults: 20 %, at least 3.
			b.budget, b.budgetPercent, b.minRetries = true, 20, 3
			if p := rb.GetBudgetPercent(); p != nil {
				b.budgetPercent = p.GetValue()
			}
			if v := rb.GetMinRetryConcurrency(); v != nil {
				b.minRetries = int64(v.GetValue())
			}
		}
	}
	return b
}

// tryConn takes a connection slot without waiting (tcp_proxy: overflow closes).
func (b *breaker) tryConn() (release func(), ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conns >= b.maxConns {
		overflows.WithLabelValues("connections").Inc()
		return nil, false
	}
	b.conns++
	return b.releaser(), true
}

// waitConn takes a connection slot for an HTTP request that has no ready
// connection. As in Envoy, such a request is pending until its connection is
// established: pending requests are bounded by maxPending (overflow at once),
// and a request waits for a slot while max_connections are open.
func (b *breaker) waitConn(ctx context.Context, req *requestState, dial func() (net.Conn, error)) (net.Conn, error) {
	var requestDone, gotConn <-chan struct{} // nil without a request: never ready
	if req != nil {
		requestDone, gotConn = req.done, req.gotConn
	}
	b.mu.Lock()
	if b.pending >= b.maxPending {
		b.mu.Unlock()
		overflows.WithLabelValues("pending").Inc()
		return nil, ErrOverflow
	}
	b.pending++
	defer func() {
		b.mu.Lock()
		b.pending--
		b.mu.Unlock()
	}()
	for b.conns >= b.maxConns {
		freed := b.freed
		b.mu.Unlock()
		select {
		case <-freed:
		case <-requestDone:
			return nil, context.Canceled
		case <-gotConn:
			// Another connection freed up for the request first: it is no
			// longer pending, and this dial has no one to serve.
			return nil, errNotNeeded
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		b.mu.Lock()
	}
	b.conns++
	b.mu.Unlock()
	release := b.releaser()
	c, err := dial()
	if err != nil {
		release()
		return nil, err
	}
	return &releasingConn{Conn: c, release: release}, nil
}

func (b *breaker) releaser() func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			b.conns--
			close(b.freed)
			b.freed = make(chan struct{})
			b.mu.Unlock()
		})
	}
}

// startRequest counts a request against max_requests.
func (b *breaker) startRequest() (done func(), err error) {
	if b.requests.Add(1) > b.maxRequests {
		b.requests.Add(-1)
		overflows.WithLabelValues("requests").Inc()
		return nil, ErrOverflow
	}
	var once sync.Once
	return func() { once.Do(func() { b.requests.Add(-1) }) }, nil
}

// startRetry counts a retry against max_retries or the retry budget
// (Envoy's RetryBudgetImpl: the limit follows the requests in flight and
// pending at the time of the retry).
func (b *breaker) startRetry() (done func(), err error) {
	limit := b.maxRetries
	if b.budget {
		b.mu.Lock()
		pending := b.pending
		b.mu.Unlock()
		active := b.requests.Load() + pending
		limit = max(b.minRetries, int64(b.budgetPercent*float64(active)/100))
	}
	if b.retries.Add(1) > limit {
		b.retries.Add(-1)
		overflows.WithLabelValues("retries").Inc()
		return nil, ErrOverflow
	}
	var once sync.Once
	return func() { once.Do(func() { b.retries.Add(-1) }) }, nil
}

// releasingConn gives its connection slot back when closed.
type releasingConn struct {
	net.Conn
	release func()
}

func (c *releasingConn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}

// CloseWrite half-closes a TCP connection (tcp_proxy passes a client's FIN on).
func (c *releasingConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

var errNotNeeded = errors.New("the request got another connection")

// requestState follows a request into the dial of its connection: net/http
// detaches dials from the request, yet a request waiting for a connection
// slot stops being pending when it ends or when a pooled connection frees up
// for it first.
type requestState struct {
	done    <-chan struct{}
	gotConn chan struct{}
	once    sync.Once
}

type requestKey struct{}

// WithRequest prepares ctx (an outgoing request's context) for the cluster's
// Transport, so the request counts as pending exactly while it waits.
func WithRequest(ctx context.Context) context.Context {
	st := &requestState{done: ctx.Done(), gotConn: make(chan struct{})}
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(httptrace.GotConnInfo) { st.once.Do(func() { close(st.gotConn) }) },
	})
	return context.WithValue(ctx, requestKey{}, st)
}

// newTransport is the cluster's HTTP connection pool: HTTP/1.1 or h2c, the
// cluster's connect timeout, TCP keepalive, upstream idle_timeout, and the
// circuit breaker's connection and pending limits.
func (c *cluster) newTransport(idle time.Duration) *http.Transport {
	var protocols http.Protocols
	if c.http2 {
		protocols.SetUnencryptedHTTP2(true)
	} else {
		protocols.SetHTTP1(true)
	}
	d := &net.Dialer{Timeout: c.connectTimeout, KeepAliveConfig: c.keepalive}
	return &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c.traffic.Store(true)
			req, _ := ctx.Value(requestKey{}).(*requestState)
			return c.breaker.waitConn(ctx, req, func() (net.Conn, error) { return d.DialContext(ctx, network, addr) })
		},
		Protocols:           &protocols,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     idle,
		DisableCompression:  true, // pass Accept-Encoding and bodies through untouched
		Proxy:               nil,
	}
}
