package upstream

import (
	"slices"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// localityLoad counts what a locality (tenant cluster, zone) of one priority
// received since the last load report, as Envoy's load stats reporter does
// for LRS: every upstream request (for tcp_proxy, every connection) is
// issued when a host is picked for it and ends as a success or an error
// (connect failure, reset, timeout, 5xx).
type localityLoad struct {
	key     loadKey
	issued  atomic.Uint64
	success atomic.Uint64
	errors  atomic.Uint64
}

type loadKey struct {
	region, zone, subZone string
	priority              uint32
}

// localityLoadLocked returns the counters of a locality, made on first use;
// they survive EDS updates so a report covers its whole interval.
func (c *cluster) localityLoadLocked(k loadKey) *localityLoad {
	for _, ll := range c.load {
		if ll.key == k {
			return ll
		}
	}
	ll := &localityLoad{key: k}
	c.load = append(c.load, ll)
	return ll
}

func (ll *localityLoad) done(o Outcome) {
	if o == LocalFailure || int(o) >= 500 {
		ll.errors.Add(1)
	} else {
		ll.success.Add(1)
	}
}

// LoadStats returns, and resets, what the named clusters (all with all) took
// since the last call: one ClusterStats per cluster that issued a request,
// upstream_locality_stats per locality and priority. interval is the report's
// load_report_interval.
func (m *Manager) LoadStats(clusters []string, all bool, interval time.Duration) []*endpointv3.ClusterStats {
	m.mu.RLock()
	var cls []*cluster
	if all {
		for _, c := range m.cls {
			cls = append(cls, c)
		}
	} else {
		for _, name := range clusters {
			if c := m.cls[name]; c != nil {
				cls = append(cls, c)
			}
		}
	}
	m.mu.RUnlock()
	var out []*endpointv3.ClusterStats
	for _, c := range cls {
		c.mu.Lock()
		var locs []*endpointv3.UpstreamLocalityStats
		c.load = slices.DeleteFunc(c.load, func(ll *localityLoad) bool {
			issued := ll.issued.Swap(0)
			success, errs := ll.success.Swap(0), ll.errors.Swap(0)
			if issued == 0 && success == 0 && errs == 0 {
				return !c.hasLocalityLocked(ll.key) // gone from EDS and drained
			}
			k := ll.key
			locs = append(locs, &endpointv3.UpstreamLocalityStats{
				Locality: &corev3.Locality{Region: k.region, Zone: k.zone, SubZone: k.subZone}, Priority: k.priority,
				TotalIssuedRequests: issued, TotalSuccessfulRequests: success, TotalErrorRequests: errs,
			})
			return false
		})
		c.mu.Unlock()
		if len(locs) > 0 {
			out = append(out, &endpointv3.ClusterStats{ClusterName: c.name, UpstreamLocalityStats: locs,
				LoadReportInterval: durationpb.New(interval)})
		}
	}
	return out
}

func (c *cluster) hasLocalityLocked(k loadKey) bool {
	for _, h := range c.hosts {
		if h.load != nil && h.load.key == k {
			return true
		}
	}
	return false
}
