package snapshot

import (
	"context"
	"sync"
	"time"

	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
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

// delay is how long a reconcile of fleet asked for at now would wait, without
// counting one.
func (p *pacer) delay(fleet string, now time.Time) time.Duration {
	if p == nil || p.interval <= 0 {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.fleet[fleet]
	if a == nil {
		return 0
	}
	credit := a.credit
	if d := now.Sub(a.at); d > 0 {
		credit = min(p.most, credit+d)
	}
	if credit >= p.interval {
		return 0
	}
	return p.interval - credit
}

// pacedHandler enqueues a fleet's reconcile for when its pace allows:
// during a burst, the events of the interval wait together in the queue
// (one reconcile takes them all) rather than each running a reconcile that
// is only put off again. Reconcile still asks the pacer (what the handler
// decided can be overtaken).
type pacedHandler struct {
	h    handler.EventHandler
	pace *pacer
}

func (b *Builder) paced(h handler.EventHandler) handler.EventHandler {
	return pacedHandler{h: h, pace: b.pace}
}

func (p pacedHandler) Create(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	p.h.Create(ctx, e, pacedQueue{q, p.pace})
}

func (p pacedHandler) Update(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	p.h.Update(ctx, e, pacedQueue{q, p.pace})
}

func (p pacedHandler) Delete(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	p.h.Delete(ctx, e, pacedQueue{q, p.pace})
}

func (p pacedHandler) Generic(ctx context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	p.h.Generic(ctx, e, pacedQueue{q, p.pace})
}

// pacedQueue adds a fleet's request after its pace's delay.
type pacedQueue struct {
	workqueue.TypedRateLimitingInterface[reconcile.Request]
	pace *pacer
}

func (q pacedQueue) Add(r reconcile.Request) {
	if d := q.pace.delay(r.Name, time.Now()); d > 0 {
		q.AddAfter(r, d)
		return
	}
	q.TypedRateLimitingInterface.Add(r)
}
