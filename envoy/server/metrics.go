package server

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	proxies         *prometheus.GaugeVec
	snapshots       *prometheus.CounterVec
	rejects         *prometheus.CounterVec
	pushes          *prometheus.CounterVec
	pushedResources *prometheus.CounterVec
	nacks           *prometheus.CounterVec
	propagation     *prometheus.HistogramVec
	debounce        prometheus.Histogram
	refused         prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		proxies: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fleetlb_xds_connected_proxies", Help: "Proxies with an open xDS stream."}, []string{"fleet"}),
		snapshots: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetlb_xds_snapshots_total",
			Help: "Snapshots set (identical ones are not set again)."}, []string{"fleet"}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetlb_xds_snapshot_rejects_total",
			Help: "Snapshots refused because a resource failed validation or the snapshot was inconsistent."}, []string{"fleet"}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetlb_xds_pushes_total", Help: "xDS responses sent."}, []string{"fleet", "type"}),
		pushedResources: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetlb_xds_pushed_resources_total",
			Help: "Resources carried by xDS responses (delta: changed and removed only)."}, []string{"fleet", "type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetlb_xds_nacks_total", Help: "Configurations refused by a proxy."}, []string{"fleet", "type"}),
		propagation: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "fleetlb_xds_propagation_seconds",
			Help:    "From Set to every connected proxy of the fleet acknowledging it.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}, []string{"fleet"}),
		debounce: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "fleetlb_xds_coalescing_delay_seconds",
			Help: "How long Sets waited to be coalesced into a snapshot.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 10)}),
	}
	m.refused = prometheus.NewCounter(prometheus.CounterOpts{Name: "fleetlb_xds_refused_streams_total",
		Help: "xDS streams refused: no or unverified client certificate, node.cluster other than the certificate's fleet, or an unknown fleet."})
	reg.MustRegister(m.refused, m.proxies, m.snapshots, m.rejects, m.pushes, m.pushedResources, m.nacks, m.propagation, m.debounce)
	return m
}

// joined starts a fleet's NACK and reject counters at zero when its first
// proxy joins, so they are served before anything goes wrong and an alert's
// increase() sees the first NACK.
func (m *metrics) joined(fleet string) {
	m.rejects.WithLabelValues(fleet)
	for _, t := range xdsTypes {
		m.nacks.WithLabelValues(fleet, t)
	}
}
