package l7

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	previousprioritiesv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"

	"github.com/fleetlb/fleetlb/internal/proxy/pbcheck"
	"github.com/fleetlb/fleetlb/internal/proxy/upstream"
)

// Names of the retry extensions the proxy implements.
const (
	RetryPreviousHosts      = "envoy.retry_host_predicates.previous_hosts"
	RetryPreviousPriorities = "envoy.retry_priorities.previous_priorities"
)

// retryOn conditions (Envoy's x-envoy-retry-on values the proxy implements).
const (
	retry5xx = 1 << iota
	retryGatewayError
	retryConnectFailure
	retryRefusedStream
	retryReset
	retryResetBeforeRequest
	retryStatusCodes
)

var retryOnNames = map[string]int{
	"5xx": retry5xx, "gateway-error": retryGatewayError, "connect-failure": retryConnectFailure,
	"refused-stream": retryRefusedStream, "reset": retryReset, "reset-before-request": retryResetBeforeRequest,
	"retriable-status-codes": retryStatusCodes,
}

// retryPolicy is a compiled route or virtual-host retry_policy.
type retryPolicy struct {
	on            int
	numRetries    int
	perTryTimeout time.Duration
	statuses      []int
	// requestHeaders: when set, a request matching none of them is not
	// retried at all (Envoy clears its retry_on).
	requestHeaders    []headerMatch
	previousHosts     bool
	selectionAttempts int // host_selection_retry_max_attempts + 1
	priorityEvery     int // previous_priorities update_frequency; 0 off
	backoffBase       time.Duration
	backoffMax        time.Duration
}

func compileRetryPolicy(where string, rp *routev3.RetryPolicy) (*retryPolicy, error) {
	if err := pbcheck.Unsupported(where, rp, "retry_on", "num_retries", "per_try_timeout", "retriable_status_codes",
		"retriable_request_headers", "retry_host_predicate", "host_selection_retry_max_attempts", "retry_priority", "retry_back_off"); err != nil {
		return nil, err
	}
	p := &retryPolicy{numRetries: 1, selectionAttempts: 2, backoffBase: 25 * time.Millisecond}
	p.perTryTimeout = rp.GetPerTryTimeout().AsDuration()
	for tok := range strings.SplitSeq(rp.GetRetryOn(), ",") {
		tok = strings.TrimSpace(tok)
		if tok == "" {
			continue
		}
		bit, ok := retryOnNames[tok]
		if !ok {
			return nil, fmt.Errorf("%s: retry_on %q is not supported", where, tok)
		}
		p.on |= bit
	}
	if v := rp.GetNumRetries(); v != nil {
		p.numRetries = int(v.GetValue())
	}
	for _, c := range rp.GetRetriableStatusCodes() {
		p.statuses = append(p.statuses, int(c))
	}
	for i, h := range rp.GetRetriableRequestHeaders() {
		hm, err := compileHeaderMatcher(fmt.Sprintf("%s: retriable_request_headers[%d]", where, i), h)
		if err != nil {
			return nil, err
		}
		p.requestHeaders = append(p.requestHeaders, hm)
	}
	for i, hp := range rp.GetRetryHostPredicate() {
		w := fmt.Sprintf("%s: retry_host_predicate[%d]", where, i)
		if err := pbcheck.Unsupported(w, hp, "name", "typed_config"); err != nil {
			return nil, err
		}
		if hp.GetName() != RetryPreviousHosts {
			return nil, fmt.Errorf("%s: %q is not supported (only %s)", w, hp.GetName(), RetryPreviousHosts)
		}
		if tc := hp.GetTypedConfig(); tc != nil {
			var cfg previoushostsv3.PreviousHostsPredicate
			if err := tc.UnmarshalTo(&cfg); err != nil {
				return nil, fmt.Errorf("%s: typed_config: %w", w, err)
			}
		}
		p.previousHosts = true
	}
	if n := rp.GetHostSelectionRetryMaxAttempts(); n != 0 {
		if n < 0 || n > 16 {
			return nil, fmt.Errorf("%s: host_selection_retry_max_attempts %d is not supported (0-16)", where, n)
		}
		p.selectionAttempts = int(n) + 1
	}
	if pr := rp.GetRetryPriority(); pr != nil {
		w := where + ": retry_priority"
		if err := pbcheck.Unsupported(w, pr, "name", "typed_config"); err != nil {
			return nil, err
		}
		if pr.GetName() != RetryPreviousPriorities {
			return nil, fmt.Errorf("%s: %q is not supported (only %s)", w, pr.GetName(), RetryPreviousPriorities)
		}
		var cfg previousprioritiesv3.PreviousPrioritiesConfig
		if tc := pr.GetTypedConfig(); tc == nil {
			return nil, fmt.Errorf("%s: typed_config is required", w)
		} else if err := tc.UnmarshalTo(&cfg); err != nil {
			return nil, fmt.Errorf("%s: typed_config: %w", w, err)
		}
		if cfg.GetUpdateFrequency() <= 0 {
			return nil, fmt.Errorf("%s: update_frequency must be positive", w)
		}
		p.priorityEvery = int(cfg.GetUpdateFrequency())
	}
	if bo := rp.GetRetryBackOff(); bo != nil {
		if err := pbcheck.Unsupported(where+": retry_back_off", bo, "base_interval", "max_interval"); err != nil {
			return nil, err
		}
		p.backoffBase = bo.GetBaseInterval().AsDuration()
		if p.backoffBase <= 0 {
			return nil, fmt.Errorf("%s: retry_back_off.base_interval must be positive", where)
		}
		if bo.GetMaxInterval() != nil {
			p.backoffMax = bo.GetMaxInterval().AsDuration()
			if p.backoffMax < p.backoffBase {
				return nil, fmt.Errorf("%s: retry_back_off.max_interval must be at least base_interval", where)
			}
		}
	}
	if p.backoffMax == 0 {
		p.backoffMax = 10 * p.backoffBase
	}
	return p, nil
}

// retriesFor is how many retries the request may make: none when the policy
// has no retry_on or the request matches none of retriable_request_headers.
func (p *retryPolicy) retriesFor(r *http.Request) int {
	if p == nil || p.on == 0 {
		return 0
	}
	if len(p.requestHeaders) > 0 && !slices.ContainsFunc(p.requestHeaders, func(h headerMatch) bool { return h.matches(r) }) {
		return 0
	}
	return p.numRetries
}

func (p *retryPolicy) retriableStatus(code int) bool {
	switch {
	case p.on&retry5xx != 0 && code >= 500:
		return true
	case p.on&retryGatewayError != 0 && (code == 502 || code == 503 || code == 504):
		return true
	case p.on&retryStatusCodes != 0 && slices.Contains(p.statuses, code):
		return true
	}
	return false
}

// retriableError follows Envoy's wouldRetryFromReset: a connect failure with
// connect-failure, any reset (a per-try timeout included) with 5xx,
// gateway-error or reset, one before the request was sent with
// reset-before-request, and a refused stream with refused-stream.
func (p *retryPolicy) retriableError(kind errorKind, requestSent bool) bool {
	switch {
	case kind == errConnect && p.on&retryConnectFailure != 0:
		return true
	case p.on&(retry5xx|retryGatewayError|retryReset) != 0:
		return true
	case p.on&retryResetBeforeRequest != 0 && !requestSent:
		return true
	case kind == errRefusedStream && p.on&retryRefusedStream != 0:
		return true
	}
	return false
}

// backoff is Envoy's jittered exponential back-off before retry n (1-based):
// uniform in [0, (2^n - 1) × base), capped at max.
func (p *retryPolicy) backoff(n int) time.Duration {
	ceiling := time.Duration(1<<min(n, 20)-1) * p.backoffBase
	if ceiling <= 0 {
		return 0
	}
	return min(time.Duration(rand.Int64N(int64(ceiling))), p.backoffMax)
}

type errorKind int

const (
	errReset errorKind = iota
	errConnect
	errRefusedStream
)

func classify(err error) errorKind {
	var op *net.OpError
	switch {
	case errors.As(err, &op) && op.Op == "dial":
		return errConnect
	case strings.Contains(err.Error(), "REFUSED_STREAM"):
		return errRefusedStream
	}
	return errReset
}

var errPerTryTimeout = errors.New("upstream per-try timeout")

// perTryTimer is Envoy's per_try_timeout window of one attempt: it starts
// once the request has been sent whole on an upstream connection (Envoy:
// the pool is ready and the downstream request complete) and ends with the
// response headers; a response already streaming is never cut by it.
type perTryTimer struct {
	d    time.Duration
	fire func()

	mu      sync.Mutex
	timer   *time.Timer
	stopped bool
	fired   bool
}

func newPerTryTimer(d time.Duration, fire func()) *perTryTimer {
	return &perTryTimer{d: d, fire: fire}
}

func (p *perTryTimer) start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.d <= 0 || p.stopped || p.timer != nil {
		return
	}
	p.timer = time.AfterFunc(p.d, func() {
		p.mu.Lock()
		if p.stopped {
			p.mu.Unlock()
			return
		}
		p.fired = true
		p.mu.Unlock()
		p.fire()
	})
}

// stop ends the window; false if the timeout had fired.
func (p *perTryTimer) stop() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped = true
	if p.timer != nil {
		p.timer.Stop()
	}
	return !p.fired
}

// attempts is the router's upstream side of one request: it picks a host for
// each attempt, reports results to outlier detection, and retries as the
// policy allows, within the cluster's retry budget. It is the transport of
// the request's ReverseProxy, so each attempt sends the same rewritten request.
type attempts struct {
	up       Upstreams
	cluster  string
	hashKey  []byte
	base     http.RoundTripper
	policy   *retryPolicy // nil: one attempt
	retries  int
	perTry   time.Duration
	body     *replayBody // nil: no request body
	lastHost string      // the host of the response or error returned
}

func (t *attempts) RoundTrip(req *http.Request) (*http.Response, error) {
	sel := &upstream.Selection{}
	if p := t.policy; p != nil {
		sel.AvoidAttempted, sel.SelectionAttempts, sel.PriorityUpdateEvery = p.previousHosts, p.selectionAttempts, p.priorityEvery
	}
	var endRetry func() // the running retry's share of the budget
	end := func() {
		if endRetry != nil {
			endRetry()
			endRetry = nil
		}
	}
	// retry reports whether another attempt may follow, taking a share of
	// the budget for it and waiting out the back-off.
	retry := func() bool {
		if len(sel.Attempted) > t.retries || !t.replayable() {
			return false
		}
		// The attempt before has ended: its share goes back first, as an
		// Envoy retry budget counts retries in flight.
		end()
		done, err := t.up.StartRetry(t.cluster)
		if err != nil {
			return false
		}
		endRetry = done
		if d := t.policy.backoff(len(sel.Attempted)); d > 0 {
			timer := time.NewTimer(d)
			defer timer.Stop()
			select {
			case <-timer.C:
			case <-req.Context().Done():
				return false
			}
		}
		return true
	}
	for {
		a, err := t.up.PickFor(t.cluster, t.hashKey, sel)
		if err != nil {
			end()
			return nil, errNoHealthyUpstream
		}
		sel.Attempted = append(sel.Attempted, a)
		t.lastHost = a.Addr
		ctx, cancelCause := context.WithCancelCause(req.Context())
		cancel := func() { cancelCause(context.Canceled) }
		perTry := newPerTryTimer(t.perTry, func() { cancelCause(errPerTryTimeout) })
		var sent atomic.Bool
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			WroteHeaders: func() { sent.Store(true) },
			// The whole request is sent on a connection: from here Envoy's
			// per_try_timeout runs (connecting is connect_timeout's).
			WroteRequest: func(httptrace.WroteRequestInfo) { perTry.start() },
		})
		out := req.Clone(ctx)
		out.URL.Host = a.Addr
		if t.body != nil && req.Body != nil {
			out.Body = t.body.reader()
		}
		resp, err := t.base.RoundTrip(out)
		timedOut := !perTry.stop()
		if timedOut && err == nil {
			// The timeout fired as the headers came: the attempt timed out.
			resp.Body.Close()
			resp, err = nil, errPerTryTimeout
		}
		if err == nil {
			t.up.ReportStatus(t.cluster, a.Addr, resp.StatusCode)
			if t.policy != nil && t.policy.retriableStatus(resp.StatusCode) && req.Context().Err() == nil {
				if retry() {
					// The response is dropped: read a little so an HTTP/1
					// connection can be reused, then close.
					_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
					resp.Body.Close()
					cancel()
					continue
				}
			}
			if _, upgraded := resp.Body.(io.ReadWriteCloser); upgraded {
				// 101: ReverseProxy takes the connection over through the
				// body's Write, which a wrapper would hide.
				end()
				return resp, nil
			}
			resp.Body = &endingBody{ReadCloser: resp.Body, end: func() { cancel(); end() }}
			return resp, nil
		}
		perTryExpired := timedOut || errors.Is(context.Cause(ctx), errPerTryTimeout)
		cancel()
		if req.Context().Err() != nil || errors.Is(err, upstream.ErrOverflow) {
			// The client left, the route timeout fired, or a circuit breaker
			// overflowed: Envoy never retries those.
			end()
			return nil, err
		}
		t.up.Report(t.cluster, a.Addr, false)
		if t.policy != nil && t.policy.retriableError(classify(err), sent.Load()) && retry() {
			continue
		}
		end()
		if perTryExpired {
			return nil, fmt.Errorf("%w: %w", errTimeout, err)
		}
		return nil, err
	}
}

func (t *attempts) replayable() bool { return t.body == nil || t.body.replayable() }

var errNoHealthyUpstream = errors.New("no healthy upstream")

// endingBody runs end once when the response body is closed.
type endingBody struct {
	io.ReadCloser
	once sync.Once
	end  func()
}

func (b *endingBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.end)
	return err
}

// replayBody keeps a request body as it is read, up to a limit, so a retry
// can send it again. A retry is possible while nothing has been read yet or
// once the whole body has been read within the limit; in between (a body
// still arriving) or past the limit it is not, as in Envoy, which abandons
// retries when its buffer overflows.
type replayBody struct {
	src   io.Reader
	limit int

	mu       sync.Mutex
	buf      []byte
	consumed int
	eof      bool
	overflow bool
	err      error
	reading  bool
	current  *bodyReader
}

var errBodyDetached = errors.New("request body taken over by a retry")

func (b *replayBody) replayable() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.overflow && b.err == nil && !b.reading && (b.eof || b.consumed == 0)
}

// reader starts an attempt's view of the body; the previous one stops.
func (b *replayBody) reader() io.ReadCloser {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.current != nil {
		b.current.detached = true
	}
	b.current = &bodyReader{b: b}
	return b.current
}

type bodyReader struct {
	b        *replayBody
	pos      int
	detached bool
}

func (r *bodyReader) Read(p []byte) (int, error) {
	b := r.b
	b.mu.Lock()
	if r.detached {
		b.mu.Unlock()
		return 0, errBodyDetached
	}
	if !b.overflow && r.pos < len(b.buf) {
		n := copy(p, b.buf[r.pos:])
		r.pos += n
		b.mu.Unlock()
		return n, nil
	}
	switch {
	case b.eof:
		b.mu.Unlock()
		return 0, io.EOF
	case b.err != nil:
		b.mu.Unlock()
		return 0, b.err
	case r.pos != b.consumed:
		b.mu.Unlock()
		return 0, errBodyDetached
	}
	b.reading = true
	b.mu.Unlock()
	n, err := b.src.Read(p)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reading = false
	if n > 0 {
		if !b.overflow && len(b.buf)+n <= b.limit {
			b.buf = append(b.buf, p[:n]...)
		} else {
			b.overflow, b.buf = true, nil
		}
		b.consumed += n
		r.pos += n
	}
	switch {
	case err == io.EOF:
		b.eof = true
	case err != nil:
		b.err = err
	}
	return n, err
}

// Close leaves the downstream body to the server, which closes it when the
// handler returns.
func (r *bodyReader) Close() error { return nil }
