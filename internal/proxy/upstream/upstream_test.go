package upstream

import (
	"bufio"
	"context"
	"github.com/fleetlb/fleetlb/internal/fasthealth"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/go-logr/logr/testr"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/fleetlb/fleetlb/internal/model"
)

// listener is a TCP backend that accepts and closes connections.
func listener(t *testing.T, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln
}

type group struct {
	prio, weight uint32
	zone         string
	addrs        []string
}

// build runs a model backend through the real translator so the tests use
// exactly the clusters fleetlb serves.
func build(t *testing.T, b model.Backend) (*clusterv3.Cluster, *endpointv3.ClusterLoadAssignment) {
	t.Helper()
	b.Name, b.Protocol = "c", cmpOr(b.Protocol, model.BackendTCP)
	svc := model.L4Service{Ref: model.Ref{Tenant: "t", Namespace: "n", Name: "s"}, VIP: mustAddr("127.0.0.1"), Port: 1, Protocol: model.TCP, Backend: "c"}
	out, err := fasthealth.Translate(&model.Fleet{Name: "f", L4: []model.L4Service{svc}, Backends: []model.Backend{b}})
	if err != nil {
		t.Fatal(err)
	}
	c, cla := out.Clusters[0].(*clusterv3.Cluster), out.Endpoints[0].(*endpointv3.ClusterLoadAssignment)
	if err := ValidateCluster(c); err != nil {
		t.Fatal(err)
	}
	if err := ValidateLoadAssignment(cla); err != nil {
		t.Fatal(err)
	}
	return c, cla
}

func cmpOr[T comparable](a, b T) T {
	var zero T
	if a == zero {
		return b
	}
	return a
}

func groups(gs ...group) []model.EndpointGroup {
	var out []model.EndpointGroup
	for _, g := range gs {
		eg := model.EndpointGroup{Cluster: "a", Zone: g.zone, Priority: g.prio, Weight: g.weight}
		for _, a := range g.addrs {
			host, port, _ := net.SplitHostPort(a)
			p, _ := strconv.Atoi(port)
			eg.Endpoints = append(eg.Endpoints, model.Endpoint{Address: mustAddr(host), Port: uint16(p)})
		}
		out = append(out, eg)
	}
	return out
}

func manager(t *testing.T, b model.Backend) *Manager {
	c, cla := build(t, b)
	m := NewManager(testr.New(t))
	m.UpdateClusters([]*clusterv3.Cluster{c}, nil)
	m.UpdateLoadAssignments([]*endpointv3.ClusterLoadAssignment{cla}, nil)
	t.Cleanup(m.Close)
	return m
}

func count(t *testing.T, m *Manager, n int, key []byte) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		a, err := m.Pick("c", key)
		if err != nil {
			t.Fatal(err)
		}
		got[a]++
	}
	return got
}

// waitHealthy waits (bounded) until exactly the given hosts are healthy.
func waitHealthy(t *testing.T, m *Manager, want ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := m.HealthyHosts("c")
		if sameSet(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("healthy hosts %v, want %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]bool{}
	for _, x := range a {
		m[x] = true
	}
	for _, x := range b {
		if !m[x] {
			return false
		}
	}
	return true
}

var fastTCPCheck = &model.HealthCheck{Type: model.HealthTCP, Interval: model.Duration(20 * time.Millisecond), Timeout: model.Duration(200 * time.Millisecond), UnhealthyThreshold: 1, HealthyThreshold: 1}

func TestRoundRobinIsEven(t *testing.T) {
	addrs := []string{listener(t, "127.0.0.1:0").Addr().String(), listener(t, "127.0.0.1:0").Addr().String(), listener(t, "127.0.0.1:0").Addr().String()}
	m := manager(t, model.Backend{Groups: groups(group{addrs: addrs})})
	got := count(t, m, 300, nil)
	for _, a := range addrs {
		if got[a] != 100 {
			t.Fatalf("round robin over 3 hosts, 300 picks: %v", got)
		}
	}
}

func TestPriorityFailoverAndBack(t *testing.T) {
	a, b := listener(t, "127.0.0.1:0"), listener(t, "127.0.0.1:0")
	c := listener(t, "127.0.0.1:0")
	aAddr, bAddr, cAddr := a.Addr().String(), b.Addr().String(), c.Addr().String()
	m := manager(t, model.Backend{HealthCheck: fastTCPCheck,
		Groups: groups(group{prio: 0, addrs: []string{aAddr, bAddr}}, group{prio: 1, addrs: []string{cAddr}})})
	waitHealthy(t, m, aAddr, bAddr, cAddr)
	if got := count(t, m, 200, nil); got[cAddr] != 0 {
		t.Fatalf("healthy priority 0, yet priority 1 got traffic: %v", got)
	}
	a.Close()
	b.Close()
	waitHealthy(t, m, cAddr)
	if got := count(t, m, 100, nil); got[cAddr] != 100 {
		t.Fatalf("every priority-0 host failed, yet traffic did not all go to priority 1: %v", got)
	}
	listener(t, aAddr)
	listener(t, bAddr)
	waitHealthy(t, m, aAddr, bAddr, cAddr)
	if got := count(t, m, 200, nil); got[cAddr] != 0 {
		t.Fatalf("priority 0 recovered, yet priority 1 still got traffic: %v", got)
	}
}

func TestPartialHealthSpillsOverByOverprovisioning(t *testing.T) {
	up1, up2 := listener(t, "127.0.0.1:0").Addr().String(), listener(t, "127.0.0.1:0").Addr().String()
	down1, down2 := closedAddr(t), closedAddr(t)
	spare := listener(t, "127.0.0.1:0").Addr().String()
	m := manager(t, model.Backend{HealthCheck: fastTCPCheck,
		Groups: groups(group{prio: 0, addrs: []string{up1, up2, down1, down2}}, group{prio: 1, addrs: []string{spare}})})
	waitHealthy(t, m, up1, up2, spare)
	// Half of priority 0 is healthy: 50% × 1.4 = 70% stays, 30% spills to priority 1.
	got := count(t, m, 4000, nil)
	share := float64(got[spare]) / 4000
	if share < 0.24 || share > 0.36 {
		t.Fatalf("priority 1 share %.3f, want about 0.30 (%v)", share, got)
	}
	if got[down1]+got[down2] != 0 {
		t.Fatalf("unhealthy hosts picked: %v", got)
	}
}

func closedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

func TestPanicModeUsesAllHosts(t *testing.T) {
	d1, d2 := closedAddr(t), closedAddr(t)
	m := manager(t, model.Backend{HealthCheck: fastTCPCheck, Groups: groups(group{addrs: []string{d1, d2}})})
	time.Sleep(100 * time.Millisecond) // several failed checks
	if got := count(t, m, 10, nil); got[d1]+got[d2] != 10 {
		t.Fatalf("with no healthy host Envoy's panic mode spreads over all hosts: %v", got)
	}
}

func TestLocalityWeights(t *testing.T) {
	z1, z2 := listener(t, "127.0.0.1:0").Addr().String(), listener(t, "127.0.0.1:0").Addr().String()
	m := manager(t, model.Backend{LocalityWeighted: true,
		Groups: groups(group{zone: "z1", weight: 80, addrs: []string{z1}}, group{zone: "z2", weight: 20, addrs: []string{z2}})})
	got := count(t, m, 4000, nil)
	if share := float64(got[z1]) / 4000; share < 0.75 || share > 0.85 {
		t.Fatalf("locality z1 (weight 80 of 100) share %.3f: %v", share, got)
	}
}

func TestHashKeepsClientOnOneHost(t *testing.T) {
	var addrs []string
	for range 4 {
		addrs = append(addrs, listener(t, "127.0.0.1:0").Addr().String())
	}
	m := manager(t, model.Backend{SessionAffinity: true, Groups: groups(group{addrs: addrs})})
	seen := map[string]bool{}
	for i := range 20 {
		key := []byte{127, 0, 0, byte(i + 1)}
		got := count(t, m, 20, key)
		if len(got) != 1 {
			t.Fatalf("client %d spread over %v", i, got)
		}
		for a := range got {
			seen[a] = true
		}
	}
	if len(seen) < 3 {
		t.Fatalf("20 clients hashed onto only %d of 4 hosts", len(seen))
	}
}

func TestOutlierEjectionAndReturn(t *testing.T) {
	a, b := listener(t, "127.0.0.1:0").Addr().String(), listener(t, "127.0.0.1:0").Addr().String()
	m := manager(t, model.Backend{
		Outlier: &model.Outlier{Consecutive5xx: 2, Interval: model.Duration(20 * time.Millisecond),
			BaseEjectionTime: model.Duration(100 * time.Millisecond), MaxEjectionPercent: 50},
		Groups: groups(group{addrs: []string{a, b}})})
	// Two 503s in a row eject a (consecutive_5xx 2); a success in between resets.
	m.ReportStatus("c", a, 503)
	m.ReportStatus("c", a, 200)
	m.ReportStatus("c", a, 503)
	if got := count(t, m, 20, nil); got[a] == 0 {
		t.Fatalf("host ejected though its 5xx were not consecutive: %v", got)
	}
	m.ReportStatus("c", a, 503)
	if got := count(t, m, 20, nil); got[a] != 0 {
		t.Fatalf("ejected host picked: %v", got)
	}
	// A local-origin failure ejects at once (consecutive_local_origin_failure
	// 1), but max_ejection_percent 50 keeps the second host in.
	m.Report("c", b, false)
	if got := count(t, m, 20, nil); got[b] != 20 {
		t.Fatalf("more than 50%% of hosts ejected: %v", got)
	}
	deadline := time.Now().Add(10 * time.Second)
	for count(t, m, 20, nil)[a] == 0 {
		if time.Now().After(deadline) {
			t.Fatal("host not back after its ejection time")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLocalOriginFailureEjectsAtOnce(t *testing.T) {
	a, b := listener(t, "127.0.0.1:0").Addr().String(), closedAddr(t)
	m := manager(t, model.Backend{Groups: groups(group{addrs: []string{a, b}})})
	// 503s from a do not count toward local-origin failures, and four of
	// them stay under consecutive_5xx 5.
	for range 4 {
		m.ReportStatus("c", a, 503)
	}
	// One refused connect to b: out at once.
	for range 4 {
		conn, err := m.DialTCP(context.Background(), "c", nil, nil, nil)
		if err == nil {
			conn.Close()
		}
	}
	if got := count(t, m, 20, nil); got[a] != 20 {
		t.Fatalf("the refusing host was not ejected after one failed connect, or 503s ejected the other: %v", got)
	}
}

func TestDialWritesProxyProtocol(t *testing.T) {
	for _, v := range []int{1, 2} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		header := make(chan []byte, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if v == 1 {
				line, _ := bufio.NewReader(c).ReadString('\n')
				header <- []byte(line)
				return
			}
			buf := make([]byte, 16+12)
			_, _ = io.ReadFull(c, buf)
			header <- buf
		}()
		m := manager(t, model.Backend{ProxyProtocol: v, Groups: groups(group{addrs: []string{ln.Addr().String()}})})
		src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 9), Port: 5555}
		dst := &net.TCPAddr{IP: net.IPv4(127, 0, 50, 1), Port: 80}
		conn, err := m.DialTCP(context.Background(), "c", src, dst, nil)
		if err != nil {
			t.Fatal(err)
		}
		got := <-header
		conn.Close()
		if v == 1 && string(got) != "PROXY TCP4 127.0.0.9 127.0.50.1 5555 80\r\n" {
			t.Fatalf("v1 header %q", got)
		}
		if v == 2 {
			want := append(append([]byte{}, v2Signature...), 0x21, 0x11, 0, 12, 127, 0, 0, 9, 127, 0, 50, 1, 0x15, 0xb3, 0, 80)
			if string(got) != string(want) {
				t.Fatalf("v2 header % x, want % x", got, want)
			}
		}
	}
}

func TestValidateNamesTheUnsupportedField(t *testing.T) {
	c, _ := build(t, model.Backend{Groups: groups(group{addrs: []string{"127.0.0.1:1"}})})
	c.LbPolicy = clusterv3.Cluster_MAGLEV
	if err := ValidateCluster(c); err == nil || !strings.Contains(err.Error(), `cluster "c": lb_policy MAGLEV is not supported`) {
		t.Fatalf("MAGLEV: %v", err)
	}
	c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
	if err := ValidateCluster(c); err == nil || !strings.Contains(err.Error(), "type STATIC") {
		t.Fatalf("STATIC: %v", err)
	}
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
	c.HealthChecks = append(c.HealthChecks, &corev3.HealthCheck{Timeout: durationpb.New(time.Second), Interval: durationpb.New(time.Second),
		UnhealthyThreshold: wrapperspb.UInt32(1), HealthyThreshold: wrapperspb.UInt32(1),
		HealthChecker: &corev3.HealthCheck_GrpcHealthCheck_{GrpcHealthCheck: &corev3.HealthCheck_GrpcHealthCheck{}}})
	if err := ValidateCluster(c); err == nil || !strings.Contains(err.Error(), "field grpc_health_check is not supported") {
		t.Fatalf("grpc health check: %v", err)
	}
}

func TestUnknownClusterAndEmptyCluster(t *testing.T) {
	m := manager(t, model.Backend{Groups: nil})
	if _, err := m.Pick("nope", nil); err == nil || !strings.Contains(err.Error(), "no such cluster") {
		t.Fatalf("unknown cluster: %v", err)
	}
	if _, err := m.Pick("c", nil); err != ErrNoHealthyHost {
		t.Fatalf("cluster without endpoints: %v", err)
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// TestHealthCheckScheduleFollowsEnvoy: the wait before the next check by
// result and state, as Envoy's HealthCheckerImplBase::interval chooses it.
func TestHealthCheckScheduleFollowsEnvoy(t *testing.T) {
	c, _ := build(t, model.Backend{HealthCheck: &model.HealthCheck{Type: model.HealthTCP, Interval: model.Duration(2 * time.Second)},
		Groups: groups(group{addrs: []string{"127.0.0.1:1"}})})
	s := newHCSchedule(c.HealthChecks[0])
	for _, tc := range []struct {
		name                          string
		ok, pending, healthy, traffic bool
		want                          time.Duration
	}{
		{"healthy, passes", true, false, true, true, 2 * time.Second},
		{"unhealthy, passes once of two", true, true, false, true, time.Second},           // healthy_edge_interval
		{"healthy, fails once of two", false, true, true, true, time.Second},              // unhealthy_edge_interval
		{"unhealthy, fails", false, false, false, true, 4 * time.Second},                  // unhealthy_interval
		{"no traffic yet, healthy", true, false, true, false, 5 * time.Second},            // no_traffic_healthy_interval
		{"no traffic yet, passes once of two", true, true, false, false, 2 * time.Second}, // no_traffic_interval
		{"no traffic yet, failing", false, false, false, false, 2 * time.Second},          // no_traffic_interval: a standby's new or failing host at the normal interval
	} {
		if got := s.base(tc.ok, tc.pending, tc.healthy, tc.traffic); got != tc.want {
			t.Errorf("%s: next check after %v, want %v", tc.name, got, tc.want)
		}
	}
	// interval_jitter adds up to a tenth of the interval, never less than the base.
	for range 100 {
		if got := s.next(true, false, true, true); got < 2*time.Second || got >= 2*time.Second+200*time.Millisecond {
			t.Fatalf("jittered interval %v outside [2s, 2.2s)", got)
		}
	}
}

// TestPanicIsPerPriority: with too few available hosts overall, a priority
// whose own share is under 50% routes to all its hosts (Envoy's per-priority
// panic), while the total health alone would not panic.
func TestPanicIsPerPriority(t *testing.T) {
	up1, up2 := listener(t, "127.0.0.1:0").Addr().String(), listener(t, "127.0.0.1:0").Addr().String()
	down1, down2, down3 := closedAddr(t), closedAddr(t), closedAddr(t)
	spare := closedAddr(t)
	m := manager(t, model.Backend{HealthCheck: fastTCPCheck,
		Groups: groups(group{prio: 0, addrs: []string{up1, up2, down1, down2, down3}}, group{prio: 1, addrs: []string{spare}})})
	waitHealthy(t, m, up1, up2)
	// Priority 0: 2 of 5 available (40% < 50%) and health 56 < 100 in
	// total: priority 0 panics and its unhealthy hosts get traffic too.
	got := count(t, m, 500, nil)
	if got[down1]+got[down2]+got[down3] == 0 {
		t.Fatalf("priority 0 in panic, yet only its healthy hosts were picked: %v", got)
	}
}

// TestHealthChecksHoldNoGoroutineWhileIdle: hosts between checks cost a timer,
// not a goroutine each, and hosts that leave the cluster are no longer checked.
func TestHealthChecksHoldNoGoroutineWhileIdle(t *testing.T) {
	const n = 200
	var addrs []string
	for range n {
		addrs = append(addrs, listener(t, "127.0.0.1:0").Addr().String())
	}
	before := runtime.NumGoroutine()
	slow := &model.HealthCheck{Type: model.HealthTCP, Interval: model.Duration(time.Hour), Timeout: model.Duration(time.Second), UnhealthyThreshold: 1, HealthyThreshold: 1}
	m := manager(t, model.Backend{HealthCheck: slow, Groups: groups(group{addrs: addrs})})
	waitHealthy(t, m, addrs...)
	if grown := runtime.NumGoroutine() - before; grown >= n/2 {
		t.Errorf("%d goroutines more with %d idle checked hosts", grown, n)
	}

	c, err := m.get("c")
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	gone := c.hosts[addrs[0]]
	c.mu.Unlock()
	_, cla := build(t, model.Backend{HealthCheck: slow, Groups: groups(group{addrs: addrs[1:]})})
	m.UpdateLoadAssignments([]*endpointv3.ClusterLoadAssignment{cla}, nil)
	c.mu.Lock()
	stopped, pending := gone.hcStopped, gone.hcDue != nil
	c.mu.Unlock()
	if !stopped || pending {
		t.Errorf("removed host: checks stopped %v, a check still scheduled %v", stopped, pending)
	}
	m.UpdateClusters(nil, []string{"c"})
	c.mu.Lock()
	defer c.mu.Unlock()
	for addr, h := range c.hosts {
		if !h.hcStopped || h.hcDue != nil {
			t.Fatalf("host %s of a removed cluster is still checked", addr)
		}
	}
}

// TestHealthChecksBeyondTheSlots: with fewer check slots than hosts due at
// once, every host is still checked (the others shortly after).
func TestHealthChecksBeyondTheSlots(t *testing.T) {
	checks.mu.Lock()
	saved := checks.slots
	checks.slots = make(chan struct{}, 1)
	checks.mu.Unlock()
	t.Cleanup(func() {
		checks.mu.Lock()
		checks.slots = saved
		checks.mu.Unlock()
	})
	var addrs []string
	for range 20 {
		addrs = append(addrs, listener(t, "127.0.0.1:0").Addr().String())
	}
	m := manager(t, model.Backend{HealthCheck: fastTCPCheck, Groups: groups(group{addrs: addrs})})
	waitHealthy(t, m, addrs...)
}
