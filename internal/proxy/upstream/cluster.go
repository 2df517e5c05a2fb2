package upstream

import (
	"cmp"
	"context"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	proxyprotocolv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/proxy_protocol/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/go-logr/logr"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

type host struct {
	addr     string
	hcAddr   string // where health checks go (a health-check port may differ)
	priority uint32
	locality string // region/zone/sub-zone
	lweight  uint32 // locality weight
	weight   uint32
	// Active health: a host with active checks starts unhealthy until its
	// first check passes (Envoy's PENDING_ACTIVE_HC); panic mode covers startup.
	healthy  bool
	hcPasses int
	hcFails  int
	// Outlier detection (Envoy's DetectorHostMonitor): consecutive external
	// (HTTP 5xx) and local-origin (connect failure, reset, timeout) errors,
	// the ejection and its back-off multiplier.
	consec5xx     int
	consecLocal   int
	ejected       bool
	ejectedAt     time.Time
	ejectJitter   time.Duration
	ejectBackoff  int
	lastUnejected time.Time
	current       int64 // smooth weighted round robin
	// Active health checking: the host's next check in the scheduler's
	// queue (nil while one runs), and whether the host left the cluster (a
	// check in flight then changes nothing).
	hcDue     *dueCheck
	hcStopped bool
	hcChecked bool          // the first check ran
	load      *localityLoad // what its locality took, for load reports
}

func (h *host) available() bool { return h.healthy && !h.ejected }

type cluster struct {
	name           string
	log            logr.Logger
	connectTimeout time.Duration
	keepalive      net.KeepAliveConfig
	proxyProtocol  int
	http2          bool
	ringHash       bool
	localityLB     bool
	overprov       uint32
	hc             *hcConfig      // nil: no active health checking
	outlier        *outlierConfig // nil: no outlier detection
	breaker        *breaker
	idleTimeout    time.Duration // of pooled HTTP connections
	transportOnce  sync.Once
	transport      *http.Transport // HTTP clusters' connection pool, made on first use
	// traffic is set by the first upstream connection: until then health
	// checks run at no_traffic_interval (Envoy: upstream_cx_total unused).
	traffic atomic.Bool

	mu        sync.Mutex
	hosts     map[string]*host
	nextSweep time.Time       // outlier detection's next interval tick
	load      []*localityLoad // few: one per locality and priority
}

func newCluster(c *clusterv3.Cluster, log logr.Logger) *cluster {
	cl := &cluster{name: c.GetName(), log: log, connectTimeout: 5 * time.Second, hosts: map[string]*host{}, overprov: defaultOverprovisioning}
	if d := c.GetConnectTimeout(); d != nil {
		cl.connectTimeout = d.AsDuration()
	}
	if ka := c.GetUpstreamConnectionOptions().GetTcpKeepalive(); ka != nil {
		cl.keepalive = net.KeepAliveConfig{Enable: true, Idle: secs(ka.KeepaliveTime.GetValue()), Interval: secs(ka.KeepaliveInterval.GetValue()), Count: int(ka.KeepaliveProbes.GetValue())}
	}
	cl.ringHash = c.GetLbPolicy() == clusterv3.Cluster_RING_HASH
	cl.localityLB = c.GetCommonLbConfig().GetLocalityWeightedLbConfig() != nil
	idle := defaultUpstreamIdle
	if opts := c.GetTypedExtensionProtocolOptions()[httpOptionsName]; opts != nil {
		var o httpv3.HttpProtocolOptions
		if err := opts.UnmarshalTo(&o); err == nil {
			cl.http2 = o.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil
			if d := o.GetCommonHttpProtocolOptions().GetIdleTimeout(); d != nil {
				idle = d.AsDuration() // 0 disables, as in Envoy
			}
		}
	}
	cl.breaker = newBreaker(c.GetCircuitBreakers())
	if ts := c.GetTransportSocket(); ts != nil && ts.Name == proxyProtocolName {
		var pp proxyprotocolv3.ProxyProtocolUpstreamTransport
		if err := ts.GetTypedConfig().UnmarshalTo(&pp); err == nil {
			cl.proxyProtocol = 1
			if pp.GetConfig().GetVersion() == corev3.ProxyProtocolConfig_V2 {
				cl.proxyProtocol = 2
			}
		}
	}
	if len(c.GetHealthChecks()) > 0 {
		cl.hc = newHCConfig(c.GetHealthChecks()[0])
	}
	if od := c.GetOutlierDetection(); od != nil {
		cl.outlier = newOutlierConfig(od)
	}
	cl.idleTimeout = idle
	return cl
}

// Envoy's default upstream HTTP idle_timeout.
const defaultUpstreamIdle = time.Hour

func secs(v uint32) time.Duration { return time.Duration(v) * time.Second }

// httpTransport is the cluster's connection pool, made on first use: a cluster
// that carries no HTTP (tcp_proxy, standby) keeps none.
func (c *cluster) httpTransport() *http.Transport {
	c.transportOnce.Do(func() { c.transport = c.newTransport(c.idleTimeout) })
	return c.transport
}

func (c *cluster) stop() {
	// Requests in flight finish on their connections; idle ones go now.
	c.transportOnce.Do(func() {}) // none made from now on: a stopped cluster takes no request
	if c.transport != nil {
		c.transport.CloseIdleConnections()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, h := range c.hosts {
		stopHCLocked(h)
	}
}

// stopHCLocked ends a host's health checks: its next check is dropped, and a
// check in flight (bounded by the check's timeout) finds hcStopped and
// changes nothing.
func stopHCLocked(h *host) {
	h.hcStopped = true
	checks.cancelLocked(h)
}

// endpoints is a load assignment as the cluster uses it.
type endpoints struct {
	overprov uint32
	hosts    []endpoint
}

type endpoint struct {
	addr, hcAddr string
	priority     uint32
	locality     string  // region/zone/sub-zone, shared by the locality's hosts
	load         loadKey // the locality and priority, for load reports
	lweight      uint32  // locality weight
	weight       uint32
}

func compileEndpoints(cla *endpointv3.ClusterLoadAssignment) *endpoints {
	eps := &endpoints{overprov: defaultOverprovisioning}
	if of := cla.GetPolicy().GetOverprovisioningFactor(); of != nil {
		eps.overprov = of.GetValue()
	}
	for _, loc := range cla.GetEndpoints() {
		lw := loc.GetLoadBalancingWeight().GetValue()
		if lw == 0 {
			lw = 1
		}
		l := loc.GetLocality()
		key := loadKey{l.GetRegion(), l.GetZone(), l.GetSubZone(), loc.GetPriority()}
		locality := l.GetRegion() + "/" + l.GetZone() + "/" + l.GetSubZone()
		for _, lbe := range loc.GetLbEndpoints() {
			sa := lbe.GetEndpoint().GetAddress().GetSocketAddress()
			addr := net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())))
			w := lbe.GetLoadBalancingWeight().GetValue()
			if w == 0 {
				w = 1
			}
			hcAddr := addr
			if p := lbe.GetEndpoint().GetHealthCheckConfig().GetPortValue(); p != 0 {
				hcAddr = net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(p)))
			}
			eps.hosts = append(eps.hosts, endpoint{addr: addr, hcAddr: hcAddr, priority: loc.GetPriority(), locality: locality, load: key, lweight: lw, weight: w})
		}
	}
	return eps
}

// setHosts applies an EDS update: hosts that stay keep their health state.
func (c *cluster) setHosts(eps *endpoints) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.overprov = eps.overprov
	next := make(map[string]*host, len(eps.hosts))
	for _, e := range eps.hosts {
		h := c.hosts[e.addr]
		if h == nil || h.hcAddr != e.hcAddr {
			if h != nil {
				stopHCLocked(h)
			}
			h = &host{addr: e.addr, hcAddr: e.hcAddr, healthy: c.hc == nil}
			if c.hc != nil {
				c.startHCLocked(h)
			}
		}
		h.priority, h.locality, h.lweight, h.weight = e.priority, e.locality, e.lweight, e.weight
		h.load = c.localityLoadLocked(e.load)
		next[e.addr] = h
	}
	for addr, h := range c.hosts {
		if next[addr] != h {
			stopHCLocked(h)
		}
	}
	c.hosts = next
}

// Selection narrows a retry's host choice as Envoy's retry plugins do.
type Selection struct {
	// Attempted hosts so far, with their priorities (previous_hosts and
	// previous_priorities look at them).
	Attempted []Attempt
	// AvoidAttempted rejects a host already tried (previous_hosts); the
	// choice is redone up to SelectionAttempts times, then the last pick stands.
	AvoidAttempted    bool
	SelectionAttempts int
	// PriorityUpdateEvery > 0 excludes the priorities of attempted hosts
	// (previous_priorities with this update_frequency).
	PriorityUpdateEvery int
}

// Attempt is a host a request was sent to.
type Attempt struct {
	Addr     string
	Priority uint32
}

func (s *Selection) tried(addr string) bool {
	for _, a := range s.Attempted {
		if a.Addr == addr {
			return true
		}
	}
	return false
}

// excludedPriorities follows PreviousPrioritiesRetryPriority: below
// update_frequency attempts the load is unchanged; every update_frequency
// attempts the priorities of all attempts so far are excluded, and in
// between the last exclusion holds.
func (s *Selection) excludedPriorities() map[uint32]bool {
	if s == nil || s.PriorityUpdateEvery <= 0 || len(s.Attempted) < s.PriorityUpdateEvery {
		return nil
	}
	upto := len(s.Attempted) - len(s.Attempted)%s.PriorityUpdateEvery
	out := map[uint32]bool{}
	for _, a := range s.Attempted[:upto] {
		out[a.Priority] = true
	}
	return out
}

// pick implements Envoy's priority and locality selection, then weighted
// round robin (or hashing) within the chosen set.
func (c *cluster) pick(hashKey []byte, sel *Selection) (*host, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.hosts) == 0 {
		return nil, ErrNoHealthyHost
	}
	now := time.Now()
	c.sweepLocked(now)
	tries := 1
	if sel != nil && sel.AvoidAttempted {
		tries = max(sel.SelectionAttempts, 1)
	}
	var h *host
	for range tries {
		var err error
		if h, err = c.pickOnce(hashKey, sel.excludedPriorities()); err != nil {
			return nil, err
		}
		if sel == nil || !sel.AvoidAttempted || !sel.tried(h.addr) {
			break
		}
	}
	if h.load != nil {
		h.load.issued.Add(1)
	}
	return h, nil
}

func (c *cluster) pickOnce(hashKey []byte, excluded map[uint32]bool) (*host, error) {
	byPrio := map[uint32][]*host{}
	var prios []uint32
	for _, h := range c.hosts {
		if _, ok := byPrio[h.priority]; !ok {
			prios = append(prios, h.priority)
		}
		byPrio[h.priority] = append(byPrio[h.priority], h)
	}
	slices.Sort(prios)
	// Health of each priority, scaled by the overprovisioning factor and
	// capped at 100; load cascades from priority 0 down.
	health := make([]float64, len(prios))
	availPct := make([]float64, len(prios))
	total := 0.0
	for i, p := range prios {
		hs := byPrio[p]
		avail := 0
		for _, h := range hs {
			if h.available() {
				avail++
			}
		}
		availPct[i] = 100 * float64(avail) / float64(len(hs))
		health[i] = min(100, float64(c.overprov)*float64(avail)/float64(len(hs)))
		total += health[i]
	}
	// Envoy's per-priority panic: while the normalized total availability
	// is 100 no priority panics; below it, a priority whose own share of
	// available hosts is under the threshold routes to all its hosts.
	allAvailable := min(total, 100) >= 100
	// previous_priorities: the load is computed as if the excluded
	// priorities had no healthy host; when nothing healthy is left the
	// original load applies.
	load := health
	if len(excluded) > 0 {
		adj, sum := slices.Clone(health), 0.0
		for i, p := range prios {
			if excluded[p] {
				adj[i] = 0
			}
			sum += adj[i]
		}
		if sum > 0 {
			load = adj
		}
	}
	loadTotal := 0.0
	for _, l := range load {
		loadTotal += l
	}
	var chosen uint32
	chosenIdx := 0
	if loadTotal == 0 {
		chosen = prios[0]
	} else {
		// Loads cascade from priority 0; when total health is below 100 they
		// are normalised, which picking uniformly below that total does.
		x := randFloat() * min(loadTotal, 100)
		remaining, acc := 100.0, 0.0
		chosen, chosenIdx = prios[len(prios)-1], len(prios)-1
		for i, p := range prios {
			l := min(remaining, load[i])
			remaining -= l
			acc += l
			if x < acc {
				chosen, chosenIdx = p, i
				break
			}
		}
	}
	panicMode := !allAvailable && availPct[chosenIdx] < panicThreshold
	candidates := byPrio[chosen]
	if !panicMode {
		candidates = slices.DeleteFunc(slices.Clone(candidates), func(h *host) bool { return !h.available() })
		if len(candidates) == 0 {
			return nil, ErrNoHealthyHost
		}
	}
	slices.SortFunc(candidates, func(a, b *host) int { return cmp.Compare(a.addr, b.addr) })
	if c.localityLB {
		candidates = c.pickLocality(candidates, panicMode)
	}
	if c.ringHash && hashKey != nil {
		// Rendezvous hashing: the same key keeps its host while that host is a
		// candidate, and only its clients move when it goes.
		var best *host
		var bestScore uint64
		for _, h := range candidates {
			if s := hash64(hashKey, []byte(h.addr)); best == nil || s > bestScore {
				best, bestScore = h, s
			}
		}
		return best, nil
	}
	// Smooth weighted round robin (nginx's algorithm).
	var best *host
	var sum int64
	for _, h := range candidates {
		h.current += int64(h.weight)
		sum += int64(h.weight)
		if best == nil || h.current > best.current {
			best = h
		}
	}
	best.current -= sum
	return best, nil
}

// pickLocality chooses one locality by weight × availability, as Envoy's
// locality-weighted load balancing does.
func (c *cluster) pickLocality(hs []*host, panicMode bool) []*host {
	type loc struct {
		hosts  []*host
		weight float64
	}
	locs := map[string]*loc{}
	var keys []string
	all := map[string]int{}
	for _, h := range c.hosts {
		all[h.locality]++
	}
	for _, h := range hs {
		l := locs[h.locality]
		if l == nil {
			l = &loc{}
			locs[h.locality] = l
			keys = append(keys, h.locality)
		}
		l.hosts = append(l.hosts, h)
	}
	slices.Sort(keys)
	total := 0.0
	for _, k := range keys {
		l := locs[k]
		avail := float64(len(l.hosts)) / float64(max(all[k], 1))
		if panicMode {
			avail = 1
		}
		l.weight = float64(l.hosts[0].lweight) * min(1, avail*float64(c.overprov)/100)
		total += l.weight
	}
	if total == 0 {
		return hs
	}
	x := randFloat() * total
	for _, k := range keys {
		if x < locs[k].weight {
			return locs[k].hosts
		}
		x -= locs[k].weight
	}
	return locs[keys[len(keys)-1]].hosts
}

// Outcome is what an upstream attempt reports to outlier detection: a
// local-origin result (the connection) or an HTTP status from the host.
type Outcome int

const (
	// LocalFailure: connect failure, reset or timeout (Envoy's
	// LocalOriginConnectFailed / LocalOriginTimeout).
	LocalFailure Outcome = -1
	// LocalSuccess: the connection was made and nothing follows on it that
	// reports (tcp_proxy; Envoy's LocalOriginConnectSuccessFinal).
	LocalSuccess Outcome = -2
	// Statuses 100-599 are HTTP responses (external origin); the connection
	// they came on was made (LocalOriginConnectSuccess).
)

// report feeds outlier detection with Envoy's consecutive-error counters.
// Without split_external_local_origin_errors a local failure counts as a
// 503 and a final local success as a 200; with it they count apart, in
// consecutive_local_origin_failure.
func (c *cluster) report(addr string, o Outcome) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.hosts[addr]
	if h == nil {
		return
	}
	if h.load != nil {
		h.load.done(o)
	}
	if c.outlier == nil {
		return
	}
	now := time.Now()
	c.sweepLocked(now)
	od := c.outlier
	split := od.split
	status := int(o)
	switch {
	case o == LocalFailure && split:
		h.consecLocal++
		if h.consecLocal == od.consecutiveLocal {
			c.ejectLocked(h, now, od.enforcingLocal, "consecutive local-origin failures")
		}
		return
	case o == LocalSuccess && split:
		h.consecLocal = 0
		return
	case o == LocalFailure:
		status = http.StatusServiceUnavailable
	case o == LocalSuccess:
		status = http.StatusOK
	case split:
		h.consecLocal = 0 // a response means the connection worked
	}
	if status < 500 {
		h.consec5xx = 0
		return
	}
	h.consec5xx++
	if h.consec5xx == od.consecutive5xx {
		c.ejectLocked(h, now, od.enforcing5xx, "consecutive 5xx")
	}
}

func u32(v *wrapperspb.UInt32Value, def uint32) uint32 {
	if v == nil {
		return def
	}
	return v.GetValue()
}

// ejectLocked ejects h unless max_ejection_percent of the cluster's hosts are
// ejected already; as in Envoy one host is always ejectable.
func (c *cluster) ejectLocked(h *host, now time.Time, enforcing uint32, why string) {
	if h.ejected {
		return
	}
	ejected := 0
	for _, o := range c.hosts {
		if o.ejected {
			ejected++
		}
	}
	maxPct := c.outlier.maxEjectionPercent
	if ejected > 0 && float64(ejected+1)*100/float64(len(c.hosts)) > float64(maxPct) {
		return
	}
	if enforcing < 100 && uint32(randFloat()*100) >= enforcing {
		return
	}
	base, maxT := c.ejectionTimes()
	if time.Duration(h.ejectBackoff)*base < maxT+base {
		h.ejectBackoff++
	}
	h.ejected, h.ejectedAt = true, now
	h.ejectJitter = 0
	if j := c.outlier.maxJitter; j > 0 {
		h.ejectJitter = time.Duration(randFloat() * float64(j))
	}
	c.log.V(1).Info("host ejected", "cluster", c.name, "host", h.addr, "reason", why, "for", min(base*time.Duration(h.ejectBackoff), maxT)+h.ejectJitter)
}

func (c *cluster) ejectionTimes() (base, maxT time.Duration) {
	return c.outlier.baseEjection, c.outlier.maxEjection
}

// outlierConfig is a cluster's outlier_detection with Envoy's defaults applied.
type outlierConfig struct {
	interval, baseEjection, maxEjection, maxJitter time.Duration
	split                                          bool
	consecutive5xx, consecutiveLocal               int
	enforcing5xx, enforcingLocal                   uint32
	maxEjectionPercent                             uint32
	healthCheckUnejects                            bool // successful_active_health_check_uneject_host
}

func newOutlierConfig(od *clusterv3.OutlierDetection) *outlierConfig {
	o := &outlierConfig{
		interval: 10 * time.Second, baseEjection: 30 * time.Second, maxEjection: 300 * time.Second,
		maxJitter:          od.GetMaxEjectionTimeJitter().AsDuration(),
		split:              od.GetSplitExternalLocalOriginErrors(),
		consecutive5xx:     int(u32(od.GetConsecutive_5Xx(), 5)),
		consecutiveLocal:   int(u32(od.GetConsecutiveLocalOriginFailure(), 5)),
		enforcing5xx:       u32(od.GetEnforcingConsecutive_5Xx(), 100),
		enforcingLocal:     u32(od.GetEnforcingConsecutiveLocalOriginFailure(), 100),
		maxEjectionPercent: min(u32(od.GetMaxEjectionPercent(), 10), 100),
		healthCheckUnejects: od.GetSuccessfulActiveHealthCheckUnejectHost() == nil ||
			od.GetSuccessfulActiveHealthCheckUnejectHost().GetValue(),
	}
	if d := od.GetInterval(); d != nil {
		o.interval = d.AsDuration()
	}
	if d := od.GetBaseEjectionTime(); d != nil {
		o.baseEjection = d.AsDuration()
	}
	if d := od.GetMaxEjectionTime(); d != nil {
		o.maxEjection = d.AsDuration()
	}
	o.maxEjection = max(o.maxEjection, o.baseEjection)
	return o
}

// sweepLocked runs the outlier detector's interval ticks that are due: an
// ejected host returns once min(base_ejection_time × back-off,
// max_ejection_time) + jitter has passed, and each tick a host that stayed
// in for an interval lowers its back-off by one. Ticks run when the cluster
// is next used rather than on a timer; nothing reads ejections in between.
func (c *cluster) sweepLocked(now time.Time) {
	if c.outlier == nil || now.Before(c.nextSweep) {
		return
	}
	interval := c.outlier.interval
	ticks := 1
	if !c.nextSweep.IsZero() {
		ticks = min(int(now.Sub(c.nextSweep)/interval)+1, 1<<10)
	}
	c.nextSweep = now.Add(interval)
	base, maxT := c.ejectionTimes()
	for _, h := range c.hosts {
		if !h.ejected {
			if !h.lastUnejected.IsZero() && now.Sub(h.lastUnejected) >= interval {
				h.ejectBackoff = max(h.ejectBackoff-ticks, 0)
			}
			continue
		}
		if min(base*time.Duration(h.ejectBackoff), maxT)+h.ejectJitter <= now.Sub(h.ejectedAt) {
			c.unejectLocked(h, now)
		}
	}
}

func (c *cluster) unejectLocked(h *host, now time.Time) {
	h.ejected, h.lastUnejected = false, now
	h.consec5xx, h.consecLocal = 0, 0
}

// hcConfig is a cluster's active health check, read once from its proto.
type hcConfig struct {
	sched                        hcSchedule
	timeout, initialJitter       time.Duration
	unhealthyAfter, healthyAfter int
	// HTTP checks (nil client: TCP connect checks).
	client   *http.Client
	path     string
	hostname string
	expected [][2]int64 // [start, end) ranges; empty: 200 only
}

func newHCConfig(hc *corev3.HealthCheck) *hcConfig {
	cfg := &hcConfig{
		sched:          newHCSchedule(hc),
		timeout:        hc.GetTimeout().AsDuration(),
		initialJitter:  hc.GetInitialJitter().AsDuration(),
		unhealthyAfter: max(int(hc.GetUnhealthyThreshold().GetValue()), 1),
		healthyAfter:   max(int(hc.GetHealthyThreshold().GetValue()), 1),
	}
	if httpCheck := hc.GetHttpHealthCheck(); httpCheck != nil {
		var protocols http.Protocols
		if httpCheck.GetCodecClientType() == typev3.CodecClientType_HTTP2 {
			protocols.SetUnencryptedHTTP2(true)
		} else {
			protocols.SetHTTP1(true)
		}
		// One client for the cluster's hosts: without keep-alives each check
		// is its own connection, as Envoy's are.
		cfg.client = &http.Client{Timeout: cfg.timeout, Transport: &http.Transport{DisableKeepAlives: true, Protocols: &protocols, Proxy: nil}}
		cfg.path, cfg.hostname = httpCheck.GetPath(), httpCheck.GetHost()
		for _, r := range httpCheck.GetExpectedStatuses() {
			cfg.expected = append(cfg.expected, [2]int64{r.GetStart(), r.GetEnd()})
		}
	}
	return cfg
}

// startHCLocked schedules a new host's first check (after initial_jitter).
func (c *cluster) startHCLocked(h *host) {
	first := time.Duration(0) // a new host is pending until its first check passes
	if d := c.hc.initialJitter; d > 0 {
		first = time.Duration(randFloat() * float64(d))
	}
	checks.scheduleLocked(c, h, first)
}

// checkHost runs one check of h and schedules the next as Envoy's
// HealthCheckerImplBase::interval does: after a success
// healthy_edge_interval while the host waits to turn healthy, else
// interval; after a failure unhealthy_edge_interval while it waits to turn
// unhealthy, else unhealthy_interval; and no_traffic_interval (for a healthy
// host no_traffic_healthy_interval) until the cluster carries traffic; plus
// interval_jitter and interval_jitter_percent.
// due is the queue entry the check was started from.
func (c *cluster) checkHost(h *host, due *dueCheck) {
	c.mu.Lock()
	if h.hcDue == due {
		h.hcDue = nil // popped: nothing to cancel while the check runs
	}
	stopped := h.hcStopped
	c.mu.Unlock()
	if stopped {
		return
	}
	ok, immediate := c.probe(h.hcAddr)
	c.mu.Lock()
	defer c.mu.Unlock()
	if h.hcStopped {
		return
	}
	firstCheck := !h.hcChecked
	h.hcChecked = true
	pending := false // the result moved the host toward a change that has not happened yet
	if ok {
		h.hcPasses, h.hcFails = h.hcPasses+1, 0
		if !h.healthy {
			if firstCheck || h.hcPasses >= c.hc.healthyAfter {
				h.healthy = true
			} else {
				pending = true
			}
		}
		// successful_active_health_check_uneject_host (default true).
		if h.ejected && (c.outlier == nil || c.outlier.healthCheckUnejects) {
			c.unejectLocked(h, time.Now())
		}
	} else {
		h.hcFails, h.hcPasses = h.hcFails+1, 0
		if h.healthy {
			// An unexpected HTTP status is not retriable: the host goes at once.
			if immediate || h.hcFails >= c.hc.unhealthyAfter {
				h.healthy = false
			} else {
				pending = true
			}
		}
	}
	next := c.hc.sched.next(ok, pending, h.healthy, c.traffic.Load())
	checks.scheduleLocked(c, h, max(next, time.Millisecond))
}

// hcSchedule holds a health check's intervals with Envoy's defaults.
type hcSchedule struct {
	interval, unhealthy, unhealthyEdge, healthyEdge, noTraffic, noTrafficHealthy, jitter time.Duration
	jitterPct                                                                            uint32
}

func newHCSchedule(hc *corev3.HealthCheck) hcSchedule {
	dur := func(d *durationpb.Duration, def time.Duration) time.Duration {
		if d == nil {
			return def
		}
		return d.AsDuration()
	}
	s := hcSchedule{interval: hc.GetInterval().AsDuration(), jitter: hc.GetIntervalJitter().AsDuration(), jitterPct: hc.GetIntervalJitterPercent()}
	s.unhealthy = dur(hc.GetUnhealthyInterval(), s.interval)
	s.unhealthyEdge = dur(hc.GetUnhealthyEdgeInterval(), s.unhealthy)
	s.healthyEdge = dur(hc.GetHealthyEdgeInterval(), s.interval)
	s.noTraffic = dur(hc.GetNoTrafficInterval(), 60*time.Second)
	s.noTrafficHealthy = dur(hc.GetNoTrafficHealthyInterval(), s.noTraffic)
	return s
}

// base is the wait before the next check without jitter: ok is the last
// result, pending that it moved the host toward a change the threshold
// holds back, healthy the host's state after it, traffic whether the
// cluster has carried any.
func (s hcSchedule) base(ok, pending, healthy, traffic bool) time.Duration {
	switch {
	case !traffic && ok && healthy && !pending:
		return s.noTrafficHealthy
	case !traffic:
		return s.noTraffic
	case ok && pending:
		return s.healthyEdge
	case ok:
		return s.interval
	case pending:
		return s.unhealthyEdge
	}
	return s.unhealthy
}

func (s hcSchedule) next(ok, pending, healthy, traffic bool) time.Duration {
	next := s.base(ok, pending, healthy, traffic)
	if s.jitterPct > 0 {
		next += time.Duration(randFloat() * float64(next) * float64(s.jitterPct) / 100)
	}
	if s.jitter > 0 {
		next += time.Duration(randFloat() * float64(s.jitter))
	}
	return next
}

// probe runs one check. immediate says a failure skips unhealthy_threshold
// (an HTTP status outside expected_statuses, as in Envoy); connect failures
// and timeouts are network failures and count against it.
//
// A check is not cancelled when its host goes (its timeout bounds it): a
// context derived from a per-cluster one would leave that context a map of
// children, hundreds of bytes per cluster for good.
func (c *cluster) probe(addr string) (ok, immediate bool) {
	hc := c.hc
	ctx := context.Background()
	if hc.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, hc.timeout)
		defer cancel()
	}
	if hc.client == nil {
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return false, false
		}
		conn.Close()
		return true, false
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+hc.path, nil)
	if err != nil {
		return false, false
	}
	if hc.hostname != "" {
		req.Host = hc.hostname
	}
	resp, err := hc.client.Do(req)
	if err != nil {
		return false, false
	}
	resp.Body.Close()
	if len(hc.expected) == 0 {
		return resp.StatusCode == http.StatusOK, resp.StatusCode != http.StatusOK
	}
	for _, r := range hc.expected {
		if int64(resp.StatusCode) >= r[0] && int64(resp.StatusCode) < r[1] {
			return true, false
		}
	}
	return false, true
}
