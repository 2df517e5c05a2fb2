package upstream

import (
	"cmp"
	"context"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	proxyprotocolv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/proxy_protocol/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/go-logr/logr"
)

type host struct {
	addr     string
	hcAddr   string // where health checks go (a health-check port may differ)
	priority uint32
	locality string
	lweight  uint32 // locality weight
	weight   uint32
	// Active health: a host with active checks starts unhealthy until its
	// first check passes (Envoy's PENDING_ACTIVE_HC); panic mode covers startup.
	healthy  bool
	hcPasses int
	hcFails  int
	// Outlier detection.
	consecFail   int
	ejections    int
	ejectedUntil time.Time
	current      int64 // smooth weighted round robin
	stopHC       context.CancelFunc
}

func (h *host) available(now time.Time) bool { return h.healthy && now.After(h.ejectedUntil) }

type cluster struct {
	proto          *clusterv3.Cluster
	log            logr.Logger
	connectTimeout time.Duration
	keepalive      net.KeepAliveConfig
	proxyProtocol  int
	http2          bool
	ringHash       bool
	localityLB     bool
	overprov       uint32
	hc             *corev3.HealthCheck
	outlier        *clusterv3.OutlierDetection
	breaker        *breaker
	transport      *http.Transport // HTTP clusters' connection pool

	mu    sync.Mutex
	hosts map[string]*host
}

func newCluster(c *clusterv3.Cluster, log logr.Logger) *cluster {
	cl := &cluster{proto: c, log: log, connectTimeout: 5 * time.Second, hosts: map[string]*host{}, overprov: defaultOverprovisioning}
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
		cl.hc = c.GetHealthChecks()[0]
	}
	cl.outlier = c.GetOutlierDetection()
	cl.transport = cl.newTransport(idle)
	return cl
}

// Envoy's default upstream HTTP idle_timeout.
const defaultUpstreamIdle = time.Hour

func secs(v uint32) time.Duration { return time.Duration(v) * time.Second }

func (c *cluster) stop() {
	// Requests in flight finish on their connections; idle ones go now.
	c.transport.CloseIdleConnections()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, h := range c.hosts {
		if h.stopHC != nil {
			h.stopHC()
		}
	}
}

// setHosts applies an EDS update: hosts that stay keep their health state.
func (c *cluster) setHosts(cla *endpointv3.ClusterLoadAssignment) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.overprov = defaultOverprovisioning
	if of := cla.GetPolicy().GetOverprovisioningFactor(); of != nil {
		c.overprov = of.GetValue()
	}
	next := map[string]*host{}
	for _, loc := range cla.GetEndpoints() {
		lw := loc.GetLoadBalancingWeight().GetValue()
		if lw == 0 {
			lw = 1
		}
		locKey := loc.GetLocality().GetRegion() + "/" + loc.GetLocality().GetZone() + "/" + loc.GetLocality().GetSubZone()
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
			h := c.hosts[addr]
			if h == nil || h.hcAddr != hcAddr {
				if h != nil && h.stopHC != nil {
					h.stopHC()
				}
				h = &host{addr: addr, hcAddr: hcAddr, healthy: c.hc == nil}
				if c.hc != nil {
					ctx, cancel := context.WithCancel(context.Background())
					h.stopHC = cancel
					go c.healthCheck(ctx, h)
				}
			}
			h.priority, h.locality, h.lweight, h.weight = loc.GetPriority(), locKey, lw, w
			next[addr] = h
		}
	}
	for addr, h := range c.hosts {
		if next[addr] == nil && h.stopHC != nil {
			h.stopHC()
		}
	}
	c.hosts = next
}

// pick implements Envoy's priority and locality selection, then weighted
// round robin (or hashing) within the chosen set.
func (c *cluster) pick(hashKey []byte) (*host, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.hosts) == 0 {
		return nil, ErrNoHealthyHost
	}
	now := time.Now()
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
	total := 0.0
	for i, p := range prios {
		hs := byPrio[p]
		avail := 0
		for _, h := range hs {
			if h.available(now) {
				avail++
			}
		}
		health[i] = min(100, float64(c.overprov)*float64(avail)/float64(len(hs)))
		total += health[i]
	}
	panicMode := min(total, 100) < panicThreshold
	var chosen uint32
	if total == 0 {
		chosen = prios[0]
	} else {
		// Loads cascade from priority 0; when total health is below 100 they
		// are normalised, which picking uniformly below that total does.
		x := randFloat() * min(total, 100)
		remaining, acc := 100.0, 0.0
		chosen = prios[len(prios)-1]
		for i, p := range prios {
			load := min(remaining, health[i])
			remaining -= load
			acc += load
			if x < acc {
				chosen = p
				break
			}
		}
	}
	candidates := byPrio[chosen]
	if !panicMode {
		candidates = slices.DeleteFunc(slices.Clone(candidates), func(h *host) bool { return !h.available(now) })
		if len(candidates) == 0 {
			return nil, ErrNoHealthyHost
		}
	}
	slices.SortFunc(candidates, func(a, b *host) int { return cmp.Compare(a.addr, b.addr) })
	if c.localityLB {
		candidates = c.pickLocality(candidates, now, panicMode)
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
func (c *cluster) pickLocality(hs []*host, now time.Time, panicMode bool) []*host {
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

// report is passive outlier detection (consecutive_5xx / connect failures).
func (c *cluster) report(addr string, success bool) {
	if c.outlier == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.hosts[addr]
	if h == nil {
		return
	}
	if success {
		h.consecFail = 0
		return
	}
	h.consecFail++
	limit := int(c.outlier.GetConsecutive_5Xx().GetValue())
	if limit == 0 {
		limit = 5
	}
	if h.consecFail < limit {
		return
	}
	maxPct := c.outlier.GetMaxEjectionPercent().GetValue()
	if c.outlier.GetMaxEjectionPercent() == nil {
		maxPct = 10
	}
	now := time.Now()
	ejected := 0
	for _, o := range c.hosts {
		if now.Before(o.ejectedUntil) {
			ejected++
		}
	}
	if float64(ejected+1)*100/float64(len(c.hosts)) > float64(maxPct) {
		return
	}
	base := 30 * time.Second
	if d := c.outlier.GetBaseEjectionTime(); d != nil {
		base = d.AsDuration()
	}
	h.ejections++
	h.ejectedUntil = now.Add(base * time.Duration(h.ejections))
	h.consecFail = 0
	c.log.V(1).Info("host ejected", "host", addr, "for", base*time.Duration(h.ejections))
}

// healthCheck probes one host until ctx ends.
func (c *cluster) healthCheck(ctx context.Context, h *host) {
	interval, timeout := 5*time.Second, time.Second
	if d := c.hc.GetInterval(); d != nil {
		interval = d.AsDuration()
	}
	if d := c.hc.GetTimeout(); d != nil {
		timeout = d.AsDuration()
	}
	unhealthyAfter, healthyAfter := int(c.hc.GetUnhealthyThreshold().GetValue()), int(c.hc.GetHealthyThreshold().GetValue())
	unhealthyAfter, healthyAfter = max(unhealthyAfter, 1), max(healthyAfter, 1)
	httpCheck := c.hc.GetHttpHealthCheck()
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	t := time.NewTimer(0) // the first check runs at once: a new host is pending until it passes
	defer t.Stop()
	first := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ok := c.probe(ctx, client, h.hcAddr, httpCheck, timeout)
		c.mu.Lock()
		if ok {
			h.hcPasses, h.hcFails = h.hcPasses+1, 0
			if first || h.hcPasses >= healthyAfter {
				h.healthy = true
			}
		} else {
			h.hcFails, h.hcPasses = h.hcFails+1, 0
			if h.hcFails >= unhealthyAfter {
				h.healthy = false
			}
		}
		c.mu.Unlock()
		first = false
		t.Reset(interval)
	}
}

func (c *cluster) probe(ctx context.Context, client *http.Client, addr string, hc *corev3.HealthCheck_HttpHealthCheck, timeout time.Duration) bool {
	if hc == nil {
		conn, err := (&net.Dialer{Timeout: timeout}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return false
		}
		conn.Close()
		return true
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+hc.GetPath(), nil)
	if err != nil {
		return false
	}
	if hc.GetHost() != "" {
		req.Host = hc.GetHost()
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	if len(hc.GetExpectedStatuses()) == 0 {
		return resp.StatusCode >= 200 && resp.StatusCode < 300
	}
	for _, r := range hc.GetExpectedStatuses() {
		if int64(resp.StatusCode) >= r.GetStart() && int64(resp.StatusCode) < r.GetEnd() {
			return true
		}
	}
	return false
}
