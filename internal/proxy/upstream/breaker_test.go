package upstream

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/fleetlb/fleetlb/envoy/translate"
	"github.com/fleetlb/fleetlb/internal/model"
)

// buildHTTP runs an HTTP/1.1 backend through the real translator.
func buildHTTP(t *testing.T, addr string) (*clusterv3.Cluster, *endpointv3.ClusterLoadAssignment) {
	t.Helper()
	b := model.Backend{Name: "c", Protocol: model.BackendHTTP1, Groups: groups(group{addrs: []string{addr}})}
	out, err := translate.Translate(&model.Fleet{Name: "f", Backends: []model.Backend{b},
		HTTP: &model.SharedListener{VIP: mustAddr("127.0.0.1"), Port: 1},
		VirtualHosts: []model.VirtualHost{{Name: "v", Hostnames: []string{"a.example.com"}, Routes: []model.Route{{Name: "r",
			Match: model.Match{PathType: model.PathPrefix, Path: "/"}, Forward: &model.Forward{Backends: []model.WeightedBackend{{Backend: "c", Weight: 1}}}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	c := out.Clusters[0].(*clusterv3.Cluster)
	if err := ValidateCluster(c); err != nil {
		t.Fatal(err)
	}
	return c, out.Endpoints[0].(*endpointv3.ClusterLoadAssignment)
}

func TestValidateCircuitBreakersAndHTTPOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		mut  func(c *clusterv3.Cluster)
		want string
	}{
		{"per-host thresholds", func(c *clusterv3.Cluster) {
			c.CircuitBreakers.PerHostThresholds = []*clusterv3.CircuitBreakers_Thresholds{{MaxConnections: wrapperspb.UInt32(3)}}
		}, "field per_host_thresholds is not supported"},
		{"retry budget over 100%", func(c *clusterv3.Cluster) {
			c.CircuitBreakers.Thresholds[0].RetryBudget = &clusterv3.CircuitBreakers_Thresholds_RetryBudget{BudgetPercent: &typev3.Percent{Value: 150}}
		}, "retry_budget.budget_percent must be 0-100"},
		{"two thresholds", func(c *clusterv3.Cluster) {
			c.CircuitBreakers.Thresholds = append(c.CircuitBreakers.Thresholds, &clusterv3.CircuitBreakers_Thresholds{Priority: corev3.RoutingPriority_HIGH})
		}, "only one (priority DEFAULT) is supported"},
		{"per-host thresholds", func(c *clusterv3.Cluster) {
			c.CircuitBreakers.PerHostThresholds = []*clusterv3.CircuitBreakers_Thresholds{{}}
		}, "field per_host_thresholds is not supported"},
		{"upstream max_connection_duration", func(c *clusterv3.Cluster) {
			o := &httpv3.HttpProtocolOptions{}
			if err := c.TypedExtensionProtocolOptions[httpOptionsName].UnmarshalTo(o); err != nil {
				t.Fatal(err)
			}
			o.CommonHttpProtocolOptions.MaxConnectionDuration = durationpb.New(time.Minute)
			c.TypedExtensionProtocolOptions[httpOptionsName], _ = anypb.New(o)
		}, "common_http_protocol_options: field max_connection_duration is not supported"},
		{"auto protocol", func(c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions[httpOptionsName], _ = anypb.New(&httpv3.HttpProtocolOptions{
				UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_AutoConfig{AutoConfig: &httpv3.HttpProtocolOptions_AutoHttpConfig{}}})
		}, "field auto_config is not supported"},
		{"small buffer", func(c *clusterv3.Cluster) { c.PerConnectionBufferLimitBytes = wrapperspb.UInt32(100) }, "per_connection_buffer_limit_bytes 100 is below 32768"},
	} {
		c, _ := buildHTTP(t, "127.0.0.1:1")
		tc.mut(c)
		if err := ValidateCluster(c); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

// TestUDPSessionsCountAgainstMaxConnections: udp_proxy sessions take slots of
// the cluster's max_connections, as in Envoy.
func TestUDPSessionsCountAgainstMaxConnections(t *testing.T) {
	c, cla := build(t, model.Backend{Groups: groups(group{addrs: []string{"127.0.0.1:1"}})})
	c.CircuitBreakers.Thresholds[0].MaxConnections = wrapperspb.UInt32(1)
	m := NewManager(testr.New(t))
	t.Cleanup(m.Close)
	m.UpdateClusters([]*clusterv3.Cluster{c}, nil)
	m.UpdateLoadAssignments([]*endpointv3.ClusterLoadAssignment{cla}, nil)
	release, err := m.StartSession("c")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.StartSession("c"); !errors.Is(err, ErrOverflow) {
		t.Fatalf("second session over max_connections 1: %v, want overflow", err)
	}
	release()
	release() // idempotent
	r2, err := m.StartSession("c")
	if err != nil {
		t.Fatalf("after the first session ended: %v", err)
	}
	r2()
}

func TestMaxRequestsOverflow(t *testing.T) {
	c, cla := buildHTTP(t, "127.0.0.1:1")
	c.CircuitBreakers.Thresholds[0].MaxRequests = wrapperspb.UInt32(2)
	m := NewManager(testr.New(t))
	t.Cleanup(m.Close)
	m.UpdateClusters([]*clusterv3.Cluster{c}, nil)
	m.UpdateLoadAssignments([]*endpointv3.ClusterLoadAssignment{cla}, nil)
	d1, err1 := m.StartRequest("c")
	d2, err2 := m.StartRequest("c")
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	before := testutil.ToFloat64(overflows.WithLabelValues("requests"))
	if _, err := m.StartRequest("c"); !errors.Is(err, ErrOverflow) {
		t.Fatalf("third request over max_requests 2: %v", err)
	}
	if got := testutil.ToFloat64(overflows.WithLabelValues("requests")) - before; got != 1 {
		t.Errorf("fleetlb_proxy_upstream_overflow_total{limit=requests} rose by %v, want 1", got)
	}
	d1()
	d3, err := m.StartRequest("c")
	if err != nil {
		t.Fatalf("after one ended: %v", err)
	}
	d2()
	d3()
}

// TestUpstreamIdleTimeoutClosesPooledConnection: the cluster's
// common_http_protocol_options.idle_timeout closes a pooled connection that
// carries no request.
func TestUpstreamIdleTimeoutClosesPooledConnection(t *testing.T) {
	var open atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed:
			open.Add(-1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c, cla := buildHTTP(t, srv.Listener.Addr().String())
	o := &httpv3.HttpProtocolOptions{}
	if err := c.TypedExtensionProtocolOptions[httpOptionsName].UnmarshalTo(o); err != nil {
		t.Fatal(err)
	}
	o.CommonHttpProtocolOptions.IdleTimeout = durationpb.New(200 * time.Millisecond)
	c.TypedExtensionProtocolOptions[httpOptionsName], _ = anypb.New(o)
	m := NewManager(testr.New(t))
	t.Cleanup(m.Close)
	m.UpdateClusters([]*clusterv3.Cluster{c}, nil)
	m.UpdateLoadAssignments([]*endpointv3.ClusterLoadAssignment{cla}, nil)

	rt, err := m.Transport("c")
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	resp, err := rt.RoundTrip(req.WithContext(WithRequest(req.Context())))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if open.Load() != 1 {
		t.Fatalf("open upstream connections after one request: %d", open.Load())
	}
	waitFor := time.Now().Add(10 * time.Second)
	for open.Load() != 0 {
		if time.Now().After(waitFor) {
			t.Fatal("the idle pooled connection was never closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRetryBudgetFollowsRequestsInFlight: a retry budget allows
// budget_percent of the requests in flight (at least min_retry_concurrency);
// without one, max_retries (default 3) bounds retries.
func TestRetryBudgetFollowsRequestsInFlight(t *testing.T) {
	b := newBreaker(&clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{BudgetPercent: &typev3.Percent{Value: 20}, MinRetryConcurrency: wrapperspb.UInt32(3)},
	}}})
	take := func(n int) (got int) {
		for range n {
			if _, err := b.startRetry(); err == nil {
				got++
			}
		}
		return got
	}
	if got := take(10); got != 3 {
		t.Fatalf("no requests in flight: %d retries allowed, want the minimum 3", got)
	}
	for range 50 {
		if _, err := b.startRequest(); err != nil {
			t.Fatal(err)
		}
	}
	// 20% of 50 requests in flight: 10 retries, 3 of them already running.
	if got := take(20); got != 7 {
		t.Fatalf("50 requests in flight: %d more retries allowed, want 7", got)
	}

	plain := newBreaker(nil)
	done, err := plain.startRetry()
	if err != nil {
		t.Fatal(err)
	}
	plain.startRetry()
	plain.startRetry()
	if _, err := plain.startRetry(); !errors.Is(err, ErrOverflow) {
		t.Fatalf("a fourth retry under the default max_retries 3: %v", err)
	}
	done()
	if _, err := plain.startRetry(); err != nil {
		t.Fatalf("a retry after one ended: %v", err)
	}
}
