package snapshot

import (
	"sync"
	"time"
)

// Reconciles of one fleet that follow one another are paced: during a burst
// of events (thousands of objects created, each admitted, each acknowledged)
// every reconcile would otherwise take the few events that came while the
// last one ran, and hand the xDS server one more snapshot to compare, push
// and have acknowledged, which brings one more reconcile. A fleet may
// reconcile DefaultReconcileBurst times at once (a lone change, its status
// and its acknowledgement go through without delay); after that, once per
// ReconcileInterval while events keep coming, each reconcile taking all
// that came meanwhile. A quiet interval gives the allowance back.
const (
	DefaultReconcileInterval = 100 * time.Millisecond
	DefaultReconcileBurst    = 4
)

// pacer is a token bucket per fleet: burst reconciles, one more per
// interval (counted in time, so no rounding lets one through early).
type pacer struct {
	interval, most time.Duration // most: burst × interval

	mu    sync.Mutex
	fleet map[string]*allowance
}

type allowance struct {
	credit time.Duration // interval per reconcile allowed
	at     time.Time     // when credit was counted
}

func newPacer(interval time.Duration, burst int) *pacer {
	return &pacer{interval: interval, most: time.Duration(burst) * interval, fleet: map[string]*allowance{}}
}

// wait is how long a reconcile of fleet that comes at now must wait (0: it
// may run now, and one reconcile is counted).
func (p *pacer) wait(fleet string, now time.Time) time.Duration {
	if p == nil || p.interval <= 0 {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.fleet[fleet]
	if a == nil {
		a = &allowance{credit: p.most, at: now}
		p.fleet[fleet] = a
	}
	if d := now.Sub(a.at); d > 0 {
		a.credit = min(p.most, a.credit+d)
		a.at = now
	}
	if a.credit >= p.interval {
		a.credit -= p.interval
		return 0
	}
	return p.interval - a.credit
}
