package l7

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previousprioritiesv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func methodMatcher(m string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: m}}}}
}

func TestRetryPolicyFollowsEnvoy(t *testing.T) {
	prio, _ := anypb.New(&previousprioritiesv3.PreviousPrioritiesConfig{UpdateFrequency: 2})
	p, err := compileRetryPolicy("rp", &routev3.RetryPolicy{
		RetryOn: "connect-failure,reset-before-request,retriable-status-codes", NumRetries: wrapperspb.UInt32(2),
		RetriableStatusCodes:    []uint32{503},
		RetriableRequestHeaders: []*routev3.HeaderMatcher{methodMatcher("GET"), methodMatcher("PUT")},
		RetryPriority:           &routev3.RetryPolicy_RetryPriority{Name: RetryPreviousPriorities, ConfigType: &routev3.RetryPolicy_RetryPriority_TypedConfig{TypedConfig: prio}},
		RetryBackOff:            &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(10 * time.Millisecond)},
	})
	if err != nil {
		t.Fatal(err)
	}
	get, post := httptest.NewRequest("GET", "/", nil), httptest.NewRequest("POST", "/", nil)
	if p.retriesFor(get) != 2 || p.retriesFor(post) != 0 {
		t.Fatalf("retries: GET %d (want 2), POST %d (want 0: retriable_request_headers clear retry_on)", p.retriesFor(get), p.retriesFor(post))
	}
	if !p.retriableStatus(503) || p.retriableStatus(500) || p.retriableStatus(502) {
		t.Fatal("only the listed status 503 is retriable")
	}
	if !p.retriableError(errConnect, true) || p.retriableError(errReset, true) || !p.retriableError(errReset, false) {
		t.Fatal("connect-failure always, a reset only before the request was sent (reset-before-request)")
	}
	if p.priorityEvery != 2 || p.selectionAttempts != 2 {
		t.Fatalf("update_frequency %d, host selection attempts %d (Envoy's default: one reselection)", p.priorityEvery, p.selectionAttempts)
	}
	for n := 1; n <= 5; n++ {
		ceiling := min(time.Duration(1<<n-1)*10*time.Millisecond, 100*time.Millisecond)
		for range 50 {
			if d := p.backoff(n); d < 0 || d > ceiling {
				t.Fatalf("back-off before retry %d: %v, want within [0, %v]", n, d, ceiling)
			}
		}
	}
	if _, err := compileRetryPolicy("rp", &routev3.RetryPolicy{RetryOn: "5xx", RetryPriority: &routev3.RetryPolicy_RetryPriority{Name: RetryPreviousPriorities}}); err == nil ||
		!strings.Contains(err.Error(), "typed_config is required") {
		t.Fatalf("previous_priorities without update_frequency: %v", err)
	}
}

func TestReplayBodyOnlyWhenWhole(t *testing.T) {
	read := func(r io.Reader) string { b, _ := io.ReadAll(r); return string(b) }

	whole := &replayBody{src: strings.NewReader("hello"), limit: 16}
	if !whole.replayable() {
		t.Fatal("a body nothing has read yet is replayable")
	}
	if got := read(whole.reader()); got != "hello" {
		t.Fatalf("first attempt read %q", got)
	}
	if !whole.replayable() {
		t.Fatal("a body read whole within the limit is replayable")
	}
	if got := read(whole.reader()); got != "hello" {
		t.Fatalf("the retry read %q, want the same body again", got)
	}

	big := &replayBody{src: strings.NewReader(strings.Repeat("x", 100)), limit: 16}
	if got := read(big.reader()); len(got) != 100 {
		t.Fatalf("a body over the limit still streams whole to the first attempt: %d bytes", len(got))
	}
	if big.replayable() {
		t.Fatal("a body over the buffer limit is not replayable")
	}

	pr, pw := io.Pipe()
	partial := &replayBody{src: pr, limit: 16}
	first := partial.reader()
	go func() { _, _ = pw.Write([]byte("abc")) }()
	buf := make([]byte, 8)
	if n, _ := first.Read(buf); n != 3 {
		t.Fatalf("read %d bytes", n)
	}
	if partial.replayable() {
		t.Fatal("a body still arriving is not replayable")
	}
	pw.Close()
	// A retry would take over; the first attempt's reader stops.
	_ = partial.reader()
	if _, err := first.Read(buf); err != errBodyDetached {
		t.Fatalf("the replaced attempt's read: %v", err)
	}
}
