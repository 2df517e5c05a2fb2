package l7

import (
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/go-logr/logr"

	"github.com/fleetlb/fleetlb/internal/proxy/upstream"
)

// Upstreams is the cluster manager as the HTTP router uses it; *upstream.Manager
// satisfies it.
type Upstreams interface {
	// PickFor chooses a host of the cluster by its load-balancing policy,
	// narrowed for a retry by sel (previous hosts and priorities).
	PickFor(cluster string, hashKey []byte, sel *upstream.Selection) (upstream.Attempt, error)
	// Report feeds outlier detection a local-origin result: false is a
	// connect failure, reset or timeout.
	Report(cluster, addr string, success bool)
	// ReportStatus feeds outlier detection an upstream response's status.
	ReportStatus(cluster, addr string, status int)
	// StartRetry counts a retry against the cluster's retry budget
	// (upstream.ErrOverflow when none is left); done ends it.
	StartRetry(cluster string) (done func(), err error)
	// Transport is the cluster's connection pool (HTTP/1.1 or h2c, its circuit
	// breaker's connection and pending limits). Requests carry upstream.WithRequest.
	Transport(cluster string) (http.RoundTripper, error)
	// StartRequest counts a request against the cluster's max_requests
	// (upstream.ErrOverflow when full); done ends it.
	StartRequest(cluster string) (done func(), err error)
}

// Deps are what a listener looks up per request and per handshake, so RDS and SDS
// updates apply to new requests and handshakes without touching the listener.
type Deps struct {
	Routes    func(name string) *RouteTable
	Secrets   func(name string) *tls.Certificate
	Upstreams Upstreams
}

// Listener serves one HTTP or HTTPS listener.
type Listener struct {
	cfg    *listenerConfig
	deps   Deps
	log    logr.Logger
	srv    *http.Server
	active atomic.Int64
}

// NewListener validates l and returns a listener ready to Serve.
func NewListener(l *listenerv3.Listener, deps Deps, log logr.Logger) (*Listener, error) {
	cfg, err := parseListener(l)
	if err != nil {
		return nil, err
	}
	if deps.Routes == nil || deps.Secrets == nil || deps.Upstreams == nil {
		return nil, errors.New("l7: Deps.Routes, Deps.Secrets and Deps.Upstreams are required")
	}
	ln := &Listener{cfg: cfg, deps: deps, log: log.WithValues("listener", cfg.name)}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	if cfg.tls {
		protocols.SetHTTP2(true)
	} else {
		protocols.SetUnencryptedHTTP2(true) // h2c with prior knowledge, as Envoy's AUTO codec
	}
	lim := cfg.limits
	ln.srv = &http.Server{
		Handler:           ln,
		Protocols:         &protocols,
		IdleTimeout:       lim.idle,
		ReadHeaderTimeout: headerReadTimeout(lim),
		// net/http answers 431 itself past this (plus its 4 KiB of slack);
		// ServeHTTP applies Envoy's exact count below it.
		MaxHeaderBytes: int(lim.maxHeadersKB) << 10,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:          int(lim.h2MaxStreams),
			MaxReceiveBufferPerStream:     int(lim.h2StreamWindow),
			MaxReceiveBufferPerConnection: int(lim.h2ConnWindow),
		},
		ErrorLog: stdlog.New(logWriter{ln.log}, "", 0),
		ConnState: func(_ net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				ln.active.Add(1)
			case http.StateClosed, http.StateHijacked:
				ln.active.Add(-1)
			}
		},
	}
	if cfg.tls {
		// NextProtos here only tells net/http to set up HTTP/2; each handshake
		// gets its filter chain's own ALPN list from tlsConfig.
		ln.srv.TLSConfig = &tls.Config{GetConfigForClient: ln.tlsConfig, NextProtos: []string{"h2", "http/1.1"}}
	}
	return ln, nil
}

// headerReadTimeout bounds reading a request's headers. In Envoy a connection
// whose request headers are still arriving has no active stream, so its
// idle_timeout runs as well as request_headers_timeout: the shorter one
// applies. net/http starts the timer when it starts reading the request
// (after the first byte on a reused connection, at accept on a new one) and
// closes the connection when it fires, as Envoy does.
func headerReadTimeout(l hcmLimits) time.Duration {
	switch {
	case l.requestHeaders == 0:
		return l.idle
	case l.idle == 0:
		return l.requestHeaders
	}
	return min(l.requestHeaders, l.idle)
}

// logWriter sends net/http's own messages (TLS handshake errors…) to the debug log.
type logWriter struct{ log logr.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.V(1).Info(strings.TrimSpace(string(p)))
	return len(p), nil
}

// ActiveConnections is the number of open downstream connections.
func (l *Listener) ActiveConnections() int64 { return l.active.Load() }

// Serve accepts on ln until Close or Shutdown; it returns nil after them.
func (l *Listener) Serve(ln net.Listener) error {
	if l.cfg.tls {
		ln = tls.NewListener(ln, l.srv.TLSConfig)
	}
	err := l.srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, lets requests in flight finish (HTTP/2 clients get
// GOAWAY, idle keep-alive connections are closed) and closes what is left when ctx ends.
func (l *Listener) Shutdown(ctx context.Context) error {
	if err := l.srv.Shutdown(ctx); err != nil {
		return l.srv.Close()
	}
	return nil
}

// Close closes the listener and every connection at once.
func (l *Listener) Close() error { return l.srv.Close() }

// chain picks the filter chain for a TLS server name as Envoy does: the exact name,
// then wildcards from the most specific ("*.b.example.com" before "*.example.com"),
// then the chain without server names.
func (l *Listener) chain(serverName string) *filterChain {
	if !l.cfg.tls {
		return l.cfg.chains[0]
	}
	name := strings.ToLower(strings.TrimSuffix(serverName, "."))
	candidates := []string{name}
	for rest := name; ; {
		i := strings.IndexByte(rest, '.')
		if i < 0 || i == len(rest)-1 {
			break
		}
		rest = rest[i+1:]
		candidates = append(candidates, "*."+rest)
	}
	if name == "" {
		candidates = nil
	}
	for _, c := range candidates {
		for _, fc := range l.cfg.chains {
			for _, n := range fc.serverNames {
				if n == c {
					return fc
				}
			}
		}
	}
	for _, fc := range l.cfg.chains {
		if len(fc.serverNames) == 0 {
			return fc
		}
	}
	return nil
}

func (l *Listener) tlsConfig(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	fc := l.chain(hello.ServerName)
	if fc == nil {
		return nil, fmt.Errorf("no filter chain matches server name %q", hello.ServerName)
	}
	var certs []tls.Certificate
	for _, s := range fc.secrets {
		if c := l.deps.Secrets(s); c != nil {
			certs = append(certs, *c)
		}
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("filter chain %q: no certificate (secrets %v) has arrived yet", fc.name, fc.secrets)
	}
	alpn := fc.alpn
	if len(alpn) == 0 {
		alpn = []string{"http/1.1"}
	}
	return &tls.Config{Certificates: certs, NextProtos: alpn, MinVersion: tls.VersionTLS12}, nil
}

// ServeHTTP routes one request: virtual host by Host, first matching route, then a
// redirect or a forward to a host of the chosen cluster.
func (l *Listener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !l.headersWithinLimits(w, r) {
		return
	}
	fc := l.cfg.chains[0]
	if r.TLS != nil {
		fc = l.chain(r.TLS.ServerName)
	}
	rt := l.deps.Routes(fc.routeConfig)
	if rt == nil || fc == nil {
		http.Error(w, "route configuration "+fc.routeConfig+" has not arrived", http.StatusNotFound)
		return
	}
	host := strings.ToLower(r.Host)
	if fc.stripPort {
		host, _ = splitHostPort(host)
	}
	vh := rt.virtualHost(host)
	if vh == nil {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	path := r.URL.EscapedPath()
	if fc.normalizePath {
		path = normalizePath(path)
	}
	route := vh.pick(r, path)
	if route == nil {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	if route.status != 0 {
		w.WriteHeader(route.status)
		return
	}
	if route.redirect != nil {
		w.Header().Set("Location", route.redirect.location(r, &route.match, path))
		code := route.redirect.code
		if code == 0 {
			code = http.StatusMovedPermanently
		}
		w.WriteHeader(code)
		return
	}
	l.forward(w, r, fc, rt, vh, route, path)
}

var (
	errTimeout        = errors.New("upstream request timeout")
	errStreamIdle     = errors.New("stream timeout")
	errRequestTimeout = errors.New("request timeout")
)

// headersWithinLimits applies max_request_headers_kb and max_headers_count as
// Envoy counts them (names plus values, the request line's method, path and
// authority included) and answers 431 past them; past max_headers_count an
// HTTP/2 stream is reset instead, as Envoy does.
func (l *Listener) headersWithinLimits(w http.ResponseWriter, r *http.Request) bool {
	lim := l.cfg.limits
	count, size := 0, len(r.Method)+len(r.RequestURI)+len(r.Host)
	if r.Host != "" {
		count++
	}
	for k, vs := range r.Header {
		for _, v := range vs {
			count++
			size += len(k) + len(v)
		}
	}
	switch {
	case count > int(lim.maxHeadersCount):
		if r.ProtoMajor == 2 {
			panic(http.ErrAbortHandler)
		}
	case size > int(lim.maxHeadersKB)<<10:
	default:
		return true
	}
	if r.ProtoMajor == 1 {
		w.Header().Set("Connection", "close") // as Envoy's HTTP/1 codec after a 431
	}
	http.Error(w, "Request Header Fields Too Large", http.StatusRequestHeaderFieldsTooLarge)
	return false
}

// streamWatch implements stream_idle_timeout and request_timeout for one
// request: activity is request body read from the client and response
// headers or body written to it.
type streamWatch struct {
	last        atomic.Int64 // unix nanos
	bodyDone    atomic.Bool  // the whole request has been received
	respStarted atomic.Bool

	mu      sync.Mutex // a timer acts only before stop: never on the connection's next request
	stopped bool
	timers  []*time.Timer
}

func (s *streamWatch) touch() { s.last.Store(time.Now().UnixNano()) }

// start starts the request's timers; cancel ends the upstream request with the
// timer's cause. stop releases them.
func (s *streamWatch) start(lim hcmLimits, cancel context.CancelCauseFunc) {
	s.touch()
	s.mu.Lock()
	defer s.mu.Unlock()
	if d := lim.streamIdle; d > 0 {
		var t *time.Timer
		t = time.AfterFunc(d, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.stopped {
				return
			}
			if since := time.Since(time.Unix(0, s.last.Load())); since < d {
				t.Reset(d - since)
				return
			}
			cancel(errStreamIdle)
		})
		s.timers = append(s.timers, t)
	}
	if d := lim.request; d > 0 {
		s.timers = append(s.timers, time.AfterFunc(d, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if !s.stopped && !s.bodyDone.Load() && !s.respStarted.Load() {
				cancel(errRequestTimeout)
			}
		}))
	}
}

func (s *streamWatch) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	for _, t := range s.timers {
		t.Stop()
	}
}

// watchedBody is a request body whose reads count as activity.
type watchedBody struct {
	io.ReadCloser
	s *streamWatch
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.s.touch()
	}
	if err == io.EOF {
		b.s.bodyDone.Store(true)
	}
	return n, err
}

// watchedWriter is a response writer whose writes count as activity.
type watchedWriter struct {
	http.ResponseWriter
	s *streamWatch
}

func (w *watchedWriter) WriteHeader(code int) {
	w.s.touch()
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.s.respStarted.Store(true)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *watchedWriter) Write(p []byte) (int, error) {
	w.s.touch()
	w.s.respStarted.Store(true)
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach Flush and deadlines.
func (w *watchedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// overflow answers a request refused by a circuit breaker as Envoy does.
func overflow(w http.ResponseWriter) {
	w.Header().Set("X-Envoy-Overloaded", "true")
	http.Error(w, "upstream connect error or disconnect/reset before headers. reset reason: overflow", http.StatusServiceUnavailable)
}

func (l *Listener) forward(w http.ResponseWriter, r *http.Request, fc *filterChain, rt *RouteTable, vh *virtualHost, route *route, path string) {
	fa := route.forward
	cluster := fa.clusters[0].name
	if len(fa.clusters) > 1 {
		n := rand.Uint32N(fa.totalWeight)
		for _, c := range fa.clusters {
			if n < c.weight {
				cluster = c.name
				break
			}
			n -= c.weight
		}
	}
	client := clientAddr(r)
	var hashKey []byte
	if fa.hashSourceIP {
		hashKey = client.AsSlice()
	}
	transport, err := l.deps.Upstreams.Transport(cluster)
	if err != nil {
		http.Error(w, "no healthy upstream", http.StatusServiceUnavailable)
		return
	}
	requestDone, err := l.deps.Upstreams.StartRequest(cluster)
	if err != nil {
		overflow(w)
		return
	}
	defer requestDone()

	ctx, cancelCtx := context.WithCancelCause(r.Context())
	defer cancelCtx(nil)
	rc := http.NewResponseController(w)
	sw := &streamWatch{}
	sw.start(l.cfg.limits, func(cause error) {
		// Whether the response had started is read before the cancel: after it,
		// the handler may already be writing the 408/504, which must go out.
		started := sw.respStarted.Load()
		cancelCtx(cause)
		if !sw.bodyDone.Load() {
			// A read of the stalled body holds net/http's body lock, which the
			// 408 must take: end the read now.
			_ = rc.SetReadDeadline(time.Now())
		}
		if started {
			// The stream is reset; a write to a client that stopped reading
			// must not hold the request forever.
			_ = rc.SetWriteDeadline(time.Now())
		}
	})
	defer sw.stop()
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &watchedBody{ReadCloser: r.Body, s: sw}
	} else {
		sw.bodyDone.Store(true)
	}
	w = &watchedWriter{ResponseWriter: w, s: sw}
	r = r.WithContext(upstream.WithRequest(ctx))

	if fa.timeout > 0 {
		ctx, cancel := context.WithTimeoutCause(r.Context(), fa.timeout, errTimeout)
		defer cancel()
		r = r.WithContext(ctx)
	}
	policy := fa.retry
	if policy == nil {
		policy = vh.retry
	}
	at := &attempts{up: l.deps.Upstreams, cluster: cluster, hashKey: hashKey, base: transport, policy: policy, retries: policy.retriesFor(r)}
	if policy != nil {
		at.perTry = policy.perTryTimeout
	}
	if r.Body != nil && r.Body != http.NoBody && at.retries > 0 {
		at.body = &replayBody{src: r.Body, limit: l.cfg.retryBuffer}
	}
	newPath := fa.rewritePath(&route.match, path)
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	rp := &httputil.ReverseProxy{
		// FlushInterval stays 0: ReverseProxy already streams responses of unknown
		// length (gRPC, server-sent events) at once, and a response that ended with
		// its headers (a gRPC trailers-only status) must leave as one HEADERS frame.
		Transport:  at, // sets each attempt's host
		BufferPool: copyBuffers,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", cluster
			pr.Out.URL.RawPath = newPath
			pr.Out.URL.Path, _ = url.PathUnescape(newPath)
			pr.Out.Host = pr.In.Host
			if fa.hostRewrite != "" {
				pr.Out.Host = fa.hostRewrite
			}
			h := pr.Out.Header
			if xff := pr.In.Header.Values("X-Forwarded-For"); len(xff) > 0 {
				h["X-Forwarded-For"] = xff
			}
			if fc.useRemoteAddress && client.IsValid() {
				prior := strings.Join(h.Values("X-Forwarded-For"), ", ")
				if prior != "" {
					prior += ", "
				}
				h.Set("X-Forwarded-For", prior+client.String())
				h.Set("X-Forwarded-Proto", scheme)
			}
			if h.Get("X-Request-Id") == "" {
				h.Set("X-Request-Id", requestID())
			}
			// Envoy's default order: route, then virtual host, then route configuration.
			applyHeaders(h, route.headers.add, route.headers.remove)
			applyHeaders(h, vh.headers.add, vh.headers.remove)
			applyHeaders(h, rt.headers.add, rt.headers.remove)
		},
		ModifyResponse: func(res *http.Response) error {
			if res.StatusCode == http.StatusSwitchingProtocols {
				// The upgraded connection is copied past this writer, which
				// cannot see its activity: it ends when either side closes.
				sw.stop()
			}
			applyHeaders(res.Header, route.headers.respAdd, route.headers.respRemove)
			applyHeaders(res.Header, vh.headers.respAdd, vh.headers.respRemove)
			applyHeaders(res.Header, rt.headers.respAdd, rt.headers.respRemove)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
			switch cause := context.Cause(req.Context()); {
			case errors.Is(cause, errTimeout), errors.Is(err, errTimeout):
				http.Error(w, "upstream request timeout", http.StatusGatewayTimeout)
				return
			case errors.Is(cause, errStreamIdle), errors.Is(cause, errRequestTimeout):
				// As Envoy: 504 when the whole request had arrived, else 408, and
				// then an HTTP/1 connection with a half-read body cannot be reused.
				if sw.bodyDone.Load() {
					http.Error(w, cause.Error(), http.StatusGatewayTimeout)
					return
				}
				if req.ProtoMajor == 1 {
					w.Header().Set("Connection", "close")
				}
				http.Error(w, cause.Error(), http.StatusRequestTimeout)
				return
			case errors.Is(err, upstream.ErrOverflow):
				overflow(w)
				return
			case errors.Is(err, errNoHealthyUpstream):
				http.Error(w, "no healthy upstream", http.StatusServiceUnavailable)
				return
			}
			if r.Context().Err() != nil && req.Context().Err() != nil {
				return // the client went away
			}
			l.log.V(1).Info("upstream request failed", "cluster", cluster, "host", at.lastHost, "error", err.Error())
			http.Error(w, "upstream connect error or disconnect/reset before headers", http.StatusServiceUnavailable)
		},
	}
	// No Content-Type sniffing: a response goes out with the headers the upstream
	// (and the route's header changes) gave it, as through Envoy.
	w.Header()["Content-Type"] = nil
	rp.ServeHTTP(w, r)
}

// clientAddr is the downstream peer's address.
func clientAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func requestID() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// copyBuffers recycles ReverseProxy's 32 KiB body-copy buffers across requests.
var copyBuffers = &bufferPool{pool: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}

type bufferPool struct{ pool sync.Pool }

func (p *bufferPool) Get() []byte  { return *p.pool.Get().(*[]byte) }
func (p *bufferPool) Put(b []byte) { p.pool.Put(&b) }
