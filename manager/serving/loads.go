// Package serving tells operators which tenant cluster serves a global
// backend. Proxies report their load over Envoy's Load Reporting Service
// (envoy.service.load_stats.v3) on the xDS port; Server receives the reports,
// Loads keeps the newest window of every proxy per global backend, and
// Reconciler writes a Serving condition (with an event on change) on every
// LoadBalancer and Route of the global name, plus the gauge
// fleetlb_global_serving.
//
// Why LRS: it is the channel Envoy already has for telling a management
// server where its load went, per locality (= tenant cluster) and priority,
// over the same mTLS connection as xDS, so the manager learns the fleet of a
// report from the client certificate and a tenant has no way in. Load rather
// than health: it is what Envoy reports, and it is what an operator asks
// ("where does the traffic go"); an idle global name keeps the status of its
// last traffic.
//
// Limits: the server asks for every cluster (send_all_clusters) and a proxy
// reports those that carried traffic in the interval, so a proxy busy on
// 10 000 clusters sends ≈ 10 000 small ClusterStats a second, of which only
// global backends are kept; asking for the global ones by name needs the
// snapshot's cluster names here. With several manager replicas only the
// leader writes status, from the proxies connected to it.
package serving

import (
	"maps"
	"strings"
	"sync"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
)

// GlobalPrefix starts the names of the backends the snapshot builder joins
// across clusters: "global/<group key>/<name>/<vip>/<proto>/<port>" for
// LoadBalancers, "global/<hostname>/<route>" for Routes.
const GlobalPrefix = "global/"

// Share is what one global backend answered in the newest report window of
// the proxies that carried its traffic: successful requests (TCP:
// connections made) per tenant cluster (the locality's region). Requests a
// dead cluster failed do not count: it is not serving them.
type Share struct {
	Fleet     string
	ByCluster map[string]uint64
	Proxies   int
}

// Total is the sum over clusters.
func (s Share) Total() uint64 {
	var n uint64
	for _, v := range s.ByCluster {
		n += v
	}
	return n
}

// Serving is the set of clusters with a share.
func (s Share) Serving() map[string]bool {
	out := map[string]bool{}
	for c, v := range s.ByCluster {
		if v > 0 {
			out[c] = true
		}
	}
	return out
}

// Loads aggregates load reports. A window without traffic changes nothing:
// the serving clusters are where the last traffic went.
type Loads struct {
	mu sync.Mutex
	// backend → stream → issued requests per cluster in its newest window
	windows map[string]map[uint64]map[string]uint64
	fleets  map[string]string // backend → fleet
	shares  map[string]Share  // backend → the last share with traffic
	// OnChange is called, outside the lock, with the backends whose serving
	// clusters changed. Set before the first Record.
	OnChange func(backends []string)
}

// NewLoads returns an empty aggregate.
func NewLoads() *Loads {
	return &Loads{windows: map[string]map[uint64]map[string]uint64{}, fleets: map[string]string{}, shares: map[string]Share{}}
}

// Record takes one report of a proxy stream of fleet. Only global backends
// count; a global backend the report leaves out had no traffic on it.
func (l *Loads) Record(fleet string, stream uint64, stats []*endpointv3.ClusterStats) {
	reported := map[string]map[string]uint64{}
	for _, cs := range stats {
		name := cs.GetClusterName()
		if !strings.HasPrefix(name, GlobalPrefix) {
			continue
		}
		by := reported[name]
		if by == nil {
			by = map[string]uint64{}
			reported[name] = by
		}
		for _, ls := range cs.GetUpstreamLocalityStats() {
			by[ls.GetLocality().GetRegion()] += ls.GetTotalSuccessfulRequests()
		}
	}
	l.mu.Lock()
	var changed []string
	touched := map[string]bool{}
	for name, by := range reported {
		if l.windows[name] == nil {
			l.windows[name] = map[uint64]map[string]uint64{}
		}
		l.windows[name][stream] = by
		l.fleets[name] = fleet
		touched[name] = true
	}
	for name, streams := range l.windows {
		if _, ok := streams[stream]; ok && !touched[name] {
			delete(streams, stream) // no traffic from this proxy in this window
			touched[name] = true
		}
	}
	for name := range touched {
		if l.updateLocked(name) {
			changed = append(changed, name)
		}
	}
	l.mu.Unlock()
	if len(changed) > 0 && l.OnChange != nil {
		l.OnChange(changed)
	}
}

// Forget drops a stream's windows (the proxy went away); shares stay.
func (l *Loads) Forget(stream uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for name, streams := range l.windows {
		delete(streams, stream)
		if len(streams) == 0 {
			delete(l.windows, name)
		}
	}
}

// updateLocked recomputes a backend's share from the streams' windows and
// reports whether its set of serving clusters changed.
func (l *Loads) updateLocked(name string) bool {
	s := Share{Fleet: l.fleets[name], ByCluster: map[string]uint64{}}
	for _, by := range l.windows[name] {
		n := uint64(0)
		for c, v := range by {
			s.ByCluster[c] += v
			n += v
		}
		if n > 0 {
			s.Proxies++
		}
	}
	if s.Total() == 0 {
		return false
	}
	old, had := l.shares[name]
	l.shares[name] = s
	return !had || !maps.Equal(old.Serving(), s.Serving())
}

// Share returns the newest share of every backend whose name starts with
// prefix, summed (a global LoadBalancer has one backend per port).
func (l *Loads) Share(prefix string) (Share, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := Share{ByCluster: map[string]uint64{}}
	found := false
	for name, s := range l.shares {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		found = true
		out.Fleet = s.Fleet
		out.Proxies = max(out.Proxies, s.Proxies)
		for c, v := range s.ByCluster {
			out.ByCluster[c] += v
		}
	}
	return out, found
}
