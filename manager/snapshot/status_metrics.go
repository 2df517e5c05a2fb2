package snapshot

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// The status writer's backlog and what became of its writes, so a leader
// that falls behind on Programmed (or keeps failing to write it) shows.
var (
	statusQueueDepth = prometheus.NewGauge(prometheus.GaugeOpts{Name: "fleetlb_snapshot_status_queue_depth",
		Help: "Programmed conditions waiting to be written (retries included)."})
	statusWrites = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetlb_snapshot_status_writes_total",
		Help: "Programmed condition writes by result: written, failed (retried unless replaced), not_found (object gone), dropped (leadership lost)."},
		[]string{"result"})
	// Which way the snapshot reconciles went: changes (only what changed),
	// rebuilt (the fleet's state made again from every part), full (every
	// object checked again: conflicts, NACK containment), paced (put off
	// during a burst of events: pace.go).
	snapshotReconciles = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetlb_snapshot_reconciles_total",
		Help: "Snapshot reconciles of a fleet by path: changes, rebuilt, full; paced: put off during a burst of events."},
		[]string{"path"})
)

func init() {
	metrics.Registry.MustRegister(statusQueueDepth, statusWrites, snapshotReconciles)
	for _, path := range []string{"changes", "rebuilt", "full", "paced"} {
		snapshotReconciles.WithLabelValues(path) // shown from the start
	}
}
