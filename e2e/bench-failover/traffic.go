package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/fleetlb/fleetlb/internal/echo"
)

// probe sends one request (L7) or opens one connection (L4) and returns the
// tenant cluster that answered; an error is a failed client request.
type probe func(ctx context.Context) (cluster string, err error)

// l4Probe connects to addr and reads the echo's identity line.
func l4Probe(addr string, timeout time.Duration) probe {
	return func(ctx context.Context) (string, error) {
		d := net.Dialer{Timeout: timeout}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return "", err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return "", err
		}
		id, err := echo.ParseLine(line)
		return id.Cluster, err
	}
}

// l7Probe sends GET http://host/ to addr on a new connection each time (as
// many independent clients would) and wants a 200 from the echo.
func l7Probe(addr, host string, timeout time.Duration) probe {
	d := &net.Dialer{Timeout: timeout}
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, n, _ string) (net.Conn, error) { return d.DialContext(ctx, n, addr) }}}
	return func(ctx context.Context) (string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/", nil)
		if err != nil {
			return "", err
		}
		resp, err := c.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		if err != nil {
			return "", err
		}
		if resp.StatusCode != http.StatusOK {
			return "", statusError(resp.StatusCode)
		}
		var rep echo.Reply
		if err := json.Unmarshal(b, &rep); err != nil {
			return "", err
		}
		return rep.Cluster, nil
	}
}

// grpcProbe calls grpc.health.v1.Health/Check for the primary's health
// service on a new connection: SERVING comes only from the primary, NOT_FOUND
// only from the other cluster (every other echo knows no such service). A
// gRPC call is a POST: never retried by the fleet.
func grpcProbe(addr, host, primaryService, other string, timeout time.Duration) probe {
	return func(ctx context.Context) (string, error) {
		conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority(host))
		if err != nil {
			return "", err
		}
		defer conn.Close()
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		r, err := healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{Service: primaryService})
		switch {
		case status.Code(err) == codes.NotFound:
			return other, nil
		case err != nil:
			return "", grpcError{status.Code(err)}
		case r.GetStatus() != healthpb.HealthCheckResponse_SERVING:
			return "", fmt.Errorf("health status %v", r.GetStatus())
		}
		return strings.SplitN(primaryService, "/", 2)[0], nil
	}
}

// grpcError is a failed gRPC call, by code.
type grpcError struct{ code codes.Code }

func (e grpcError) Error() string { return "grpc " + e.code.String() }

// result is one client request, in the order they were started.
type result struct {
	start   time.Time
	end     time.Time
	done    bool
	cluster string // who answered, "" when the request failed
	failure string // why it failed (kind), "" when it did not
}

// kind sorts a failed request: the client gave up (timeout), the connection
// was refused or reset, the proxy or backend answered an error status, other.
func kind(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "reset"
	case errors.As(err, new(statusError)), errors.As(err, new(grpcError)):
		return err.Error()
	}
	return "other"
}

// statusError is an HTTP answer other than 200.
type statusError int

func (e statusError) Error() string { return fmt.Sprintf("status %d", int(e)) }

// traffic sends one request every interval, each in its own goroutine (so a
// hanging request does not slow the rate), at most maxInFlight at once.
type traffic struct {
	mu      sync.Mutex
	results []result
	skipped int // ticks without a free slot (counted as failed requests)
	wg      sync.WaitGroup
}

// run sends requests until ctx ends or maxRequests were started.
func (t *traffic) run(ctx context.Context, p probe, interval time.Duration, maxInFlight, maxRequests int) {
	slots := make(chan struct{}, maxInFlight)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for range maxRequests {
		select {
		case <-ctx.Done():
			t.wg.Wait()
			return
		case now := <-tick.C:
			select {
			case slots <- struct{}{}:
			default:
				t.mu.Lock()
				t.skipped++
				t.results = append(t.results, result{start: now, done: true, failure: "client overloaded"})
				t.mu.Unlock()
				continue
			}
			t.mu.Lock()
			i := len(t.results)
			t.results = append(t.results, result{start: now})
			t.mu.Unlock()
			t.wg.Add(1)
			go func() {
				defer t.wg.Done()
				defer func() { <-slots }()
				cluster, err := p(ctx)
				failure := ""
				if err != nil {
					cluster, failure = "", kind(err)
				}
				t.mu.Lock()
				t.results[i].done, t.results[i].end, t.results[i].cluster, t.results[i].failure = true, time.Now(), cluster, failure
				t.mu.Unlock()
			}()
		}
	}
	t.wg.Wait()
}

// mark is the index of the next request to start.
func (t *traffic) mark() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.results)
}

// settled reports whether, among the requests started from index from on,
// n consecutive finished requests (in start order, none still running
// before them) were answered by cluster; it returns the first of them, how
// many requests from `from` up to the end of that run failed, and the
// longest an answered one among them took (a retry or a connect timeout
// hides a failure but not its delay).
func (t *traffic) settled(from int, cluster string, n int) (first int, failed map[string]int, slowest time.Duration, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	run := 0
	for i := from; i < len(t.results); i++ {
		r := t.results[i]
		if !r.done {
			return 0, nil, 0, false
		}
		if r.cluster == cluster {
			run++
		} else {
			run = 0
		}
		if run == n {
			first = i - n + 1
			failed = map[string]int{}
			for j := from; j <= i; j++ {
				if r := t.results[j]; r.cluster == "" {
					failed[cmp.Or(r.failure, "other")]++
				} else {
					slowest = max(slowest, r.end.Sub(r.start))
				}
			}
			return first, failed, slowest, true
		}
	}
	return 0, nil, 0, false
}

func (t *traffic) startOf(i int) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.results[i].start
}

// waitSettled polls settled every interval until it holds or timeout passes.
func (t *traffic) waitSettled(from int, cluster string, n int, interval, timeout time.Duration) (first int, failed map[string]int, slowest time.Duration, err error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if first, failed, slowest, ok := t.settled(from, cluster, n); ok {
			return first, failed, slowest, nil
		}
		time.Sleep(interval)
	}
	return 0, nil, 0, fmt.Errorf("%d consecutive requests did not all reach cluster %s within %s", n, cluster, timeout)
}
