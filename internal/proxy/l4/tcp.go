package l4

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/go-logr/logr"

	"github.com/fleetlb/fleetlb/internal/proxy/upstream"
)

// Upstreams is what the L4 listeners need from the cluster manager;
// *upstream.Manager satisfies it.
type Upstreams interface {
	Pick(cluster string, hashKey []byte) (string, error)
	Report(cluster, addr string, success bool)
	DialTCP(ctx context.Context, cluster string, src, dst net.Addr, hashKey []byte) (net.Conn, error)
	// StartSession counts a UDP session against the cluster's max_connections
	// circuit breaker, as Envoy's udp_proxy does; release ends it.
	StartSession(cluster string) (release func(), err error)
}

// dialTimeout bounds DialTCP when the cluster manager's own connect_timeout and
// retries have not ended it.
const dialTimeout = 30 * time.Second

// TCPListener serves one tcp_proxy listener.
type TCPListener struct {
	name string
	cfg  *tcpConfig
	up   Upstreams
	log  logr.Logger

	ctx    context.Context
	cancel context.CancelFunc
	active atomic.Int64

	mu     sync.Mutex
	ln     net.Listener
	conns  map[*tcpSession]struct{}
	closed bool
	wg     sync.WaitGroup
}

// NewTCPListener validates l and returns a listener ready to Serve.
func NewTCPListener(l *listenerv3.Listener, up Upstreams, log logr.Logger) (*TCPListener, error) {
	cfg, err := parseTCP(l)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &TCPListener{
		name: l.GetName(), cfg: cfg, up: up, log: log.WithValues("listener", l.GetName()),
		ctx: ctx, cancel: cancel, conns: map[*tcpSession]struct{}{},
	}, nil
}

// ActiveConnections is the number of proxied connections open now.
func (t *TCPListener) ActiveConnections() int64 { return t.active.Load() }

// Serve accepts on ln until Close; it returns nil after Close.
func (t *TCPListener) Serve(ln net.Listener) error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.ln = ln
	t.mu.Unlock()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if t.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Temporary accept errors (EMFILE…): back off briefly, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t.log.Error(err, "accept", "retryIn", delay)
			select {
			case <-time.After(delay):
			case <-t.ctx.Done():
				return nil
			}
			continue
		}
		delay = 0
		if !t.ServeConn(c) {
			c.Close()
			return nil
		}
	}
}

// ServeConn proxies one accepted connection (the proxy's accept loop calls it
// directly, so an idle listener has no goroutine of its own besides the
// loop). It returns false, leaving c open, once the listener is closed: the
// caller hands c to the listener that replaced this one, or closes it.
func (t *TCPListener) ServeConn(c net.Conn) bool {
	src, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return false
	}
	t.mu.Unlock()
	if !t.cfg.rbac.Allowed(src.Addr()) {
		// Envoy's network RBAC closes a denied connection at once.
		t.log.V(1).Info("rbac denied", "source", c.RemoteAddr().String())
		c.Close()
		return true
	}
	s := &tcpSession{down: c}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return false
	}
	t.conns[s] = struct{}{}
	t.wg.Add(1)
	t.mu.Unlock()
	t.active.Add(1)
	go t.handle(s, src)
	return true
}

// Close stops accepting and closes every proxied connection.
func (t *TCPListener) Close() error {
	t.stopAccepting()
	t.mu.Lock()
	for s := range t.conns {
		s.close()
	}
	t.mu.Unlock()
	t.wg.Wait()
	return nil
}

// Shutdown stops accepting and lets open connections finish until ctx ends,
// then closes what is left (Envoy's listener drain).
func (t *TCPListener) Shutdown(ctx context.Context) error {
	t.stopAccepting()
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return t.Close()
	}
}

func (t *TCPListener) stopAccepting() {
	t.mu.Lock()
	t.closed = true
	ln := t.ln
	t.mu.Unlock()
	t.cancel()
	if ln != nil {
		ln.Close()
	}
}

// tcpSession is one downstream connection and its upstream.
type tcpSession struct {
	mu       sync.Mutex
	down, up net.Conn
	last     atomic.Int64 // unix nanos of the last byte in either direction
	done     bool
}

func (s *tcpSession) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = true
	s.down.Close()
	if s.up != nil {
		s.up.Close()
	}
}

func (t *TCPListener) handle(s *tcpSession, src netip.AddrPort) {
	defer func() {
		s.close()
		t.mu.Lock()
		delete(t.conns, s)
		t.mu.Unlock()
		t.active.Add(-1)
		t.wg.Done()
	}()
	cfg := t.cfg
	if len(cfg.sni) > 0 {
		// TLS passthrough: the ClientHello's SNI picks the filter chain.
		name, conn, err := peekServerName(s.down)
		if err != nil {
			t.log.V(1).Info("tls inspector", "source", src.String(), "error", err.Error())
			return
		}
		if cfg = cfg.chainFor(name); cfg == nil {
			t.log.V(1).Info("no filter chain matches the server name", "source", src.String(), "serverName", name)
			return
		}
		if !cfg.rbac.Allowed(src.Addr()) {
			return
		}
		s.mu.Lock()
		s.down = conn
		s.mu.Unlock()
	}
	hashKey := src.Addr().Unmap().AsSlice()
	ctx, cancel := context.WithTimeout(t.ctx, dialTimeout)
	var up net.Conn
	var err error
	for range max(cfg.connectAttempts, 1) {
		// Each attempt picks a host anew; outlier detection has usually
		// ejected the one that just failed. A full circuit breaker or a
		// cluster without hosts is final, as in Envoy.
		up, err = t.up.DialTCP(ctx, cfg.cluster, s.down.RemoteAddr(), s.down.LocalAddr(), hashKey)
		if err == nil || ctx.Err() != nil || errors.Is(err, upstream.ErrOverflow) || errors.Is(err, upstream.ErrNoHealthyHost) || errors.Is(err, upstream.ErrNoCluster) {
			break
		}
	}
	cancel()
	if err != nil {
		t.log.V(1).Info("upstream connect failed", "cluster", cfg.cluster, "error", err.Error())
		return
	}
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		up.Close()
		return
	}
	s.up = up
	s.mu.Unlock()

	s.last.Store(time.Now().UnixNano())
	copied := make(chan struct{}, 2)
	go func() { pipe(up, s.down, &s.last, cfg.buffer); copied <- struct{}{} }()
	go func() { pipe(s.down, up, &s.last, cfg.buffer); copied <- struct{}{} }()

	var idle <-chan time.Time
	var timer *time.Timer
	if cfg.idle > 0 {
		timer = time.NewTimer(cfg.idle)
		defer timer.Stop()
		idle = timer.C
	}
	for remaining := 2; remaining > 0; {
		select {
		case <-copied:
			remaining--
		case <-idle:
			since := time.Since(time.Unix(0, s.last.Load()))
			if since >= cfg.idle {
				t.log.V(1).Info("idle timeout", "source", src.String())
				return // deferred close ends both copies
			}
			timer.Reset(cfg.idle - since)
		}
	}
}

// copyBufferSize is the per-direction copy buffer of a TCP connection.
const copyBufferSize = 32 << 10

// copyBuffers recycles the per-direction copy buffers across connections.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}

// pipe copies src to dst through at most size bytes; at EOF it half-closes dst
// so the other direction can still finish (TCP half-close, as Envoy's tcp_proxy does).
func pipe(dst, src net.Conn, last *atomic.Int64, size int) {
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	buf := (*bp)[:size]
	for {
		n, err := src.Read(buf)
		if n > 0 {
			last.Store(time.Now().UnixNano())
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if cw, ok := dst.(interface{ CloseWrite() error }); ok {
					cw.CloseWrite()
					return
				}
			}
			dst.Close()
			return
		}
	}
}
