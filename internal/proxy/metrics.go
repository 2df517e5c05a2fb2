package proxy

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/fleetlb/fleetlb/internal/proxy/xdsclient"
)

var (
	xdsUpdates = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fleetlb_proxy_xds_updates_total",
		Help: "xDS responses handled by the proxy, by resource type and result (applied, nacked).",
	}, []string{"type", "result"})

	activeConnsDesc = prometheus.NewDesc("fleetlb_proxy_active_connections",
		"Open downstream connections (TCP, HTTP) or sessions (UDP) per listener.", []string{"listener"}, nil)

	liveMu      sync.Mutex
	liveProxies = map[*Proxy]struct{}{}
)

func init() {
	metrics.Registry.MustRegister(xdsUpdates, connectionsCollector{})
	// Start every series at 0 so rates and alerts work before the first NACK.
	for _, t := range []string{"LDS", "CDS", "EDS", "RDS", "SDS"} {
		for _, r := range []string{"applied", "nacked"} {
			xdsUpdates.WithLabelValues(t, r)
		}
	}
}

func registerProxy(p *Proxy) {
	liveMu.Lock()
	liveProxies[p] = struct{}{}
	liveMu.Unlock()
}

func unregisterProxy(p *Proxy) {
	liveMu.Lock()
	delete(liveProxies, p)
	liveMu.Unlock()
}

// connectionsCollector reads the live counts at scrape time, so the data path keeps
// only an atomic counter per listener.
type connectionsCollector struct{}

func (connectionsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- activeConnsDesc }

func (connectionsCollector) Collect(ch chan<- prometheus.Metric) {
	liveMu.Lock()
	proxies := make([]*Proxy, 0, len(liveProxies))
	for p := range liveProxies {
		proxies = append(proxies, p)
	}
	liveMu.Unlock()
	sum := map[string]int64{} // several proxies share a process only in tests
	for _, p := range proxies {
		for name, n := range p.ActiveConnections() {
			sum[name] += n
		}
	}
	for name, n := range sum {
		ch <- prometheus.MustNewConstMetric(activeConnsDesc, prometheus.GaugeValue, float64(n), name)
	}
}

func shortType(typeURL string) string {
	switch typeURL {
	case xdsclient.ListenerType:
		return "LDS"
	case xdsclient.ClusterType:
		return "CDS"
	case xdsclient.EndpointType:
		return "EDS"
	case xdsclient.RouteType:
		return "RDS"
	case xdsclient.SecretType:
		return "SDS"
	}
	return typeURL
}
