package snapshot

import (
	"context"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// A lone change and the few reconciles it brings go through at once; a burst
// is paced to one reconcile per interval; a quiet interval gives the
// allowance back, fleet by fleet.
func TestPacerLetsALoneChangeThroughAndPacesABurst(t *testing.T) {
	const interval = 100 * time.Millisecond
	p := newPacer(interval, 3)
	t0 := time.Unix(1000, 0)
	for i := range 3 {
		if w := p.wait("a", t0.Add(time.Duration(i)*time.Millisecond)); w != 0 {
			t.Fatalf("reconcile %d of a lone change waits %v", i, w)
		}
	}
	now := t0.Add(3 * time.Millisecond)
	w := p.wait("a", now)
	if w <= 0 || w > interval {
		t.Fatalf("the 4th reconcile within 3ms waits %v, want (0, %v]", w, interval)
	}
	if w2 := p.wait("b", now); w2 != 0 {
		t.Fatalf("another fleet waits %v", w2)
	}
	// Asking again does not count: it runs when the wait is over.
	if again := p.wait("a", now); again != w {
		t.Fatalf("asked again: waits %v, want %v", again, w)
	}
	now = now.Add(w)
	if w := p.wait("a", now); w != 0 {
		t.Fatalf("after its wait: waits %v", w)
	}
	// While events keep coming: one reconcile per interval.
	ran := 0
	for step := range 100 {
		if p.wait("a", now.Add(time.Duration(step)*10*time.Millisecond)) == 0 {
			ran++
		}
	}
	if ran < 9 || ran > 11 {
		t.Fatalf("an event every 10ms for 1s: %d reconciles, want about 10", ran)
	}
	// Quiet for a while: the burst is allowed again.
	now = now.Add(time.Second + 3*interval)
	for i := range 3 {
		if w := p.wait("a", now); w != 0 {
			t.Fatalf("after a quiet time, reconcile %d waits %v", i, w)
		}
	}
	var off *pacer
	if w := off.wait("a", now); w != 0 {
		t.Fatalf("not paced: waits %v", w)
	}
}

// recordingQueue records what is added, and when.
type recordingQueue struct {
	workqueue.TypedRateLimitingInterface[reconcile.Request]
	now   []string
	after map[string]time.Duration
}

func (q *recordingQueue) Add(r reconcile.Request) { q.now = append(q.now, r.Name) }
func (q *recordingQueue) AddAfter(r reconcile.Request, d time.Duration) {
	q.after[r.Name] = d
}

// During a burst the watch handlers put a fleet's reconcile off in the queue
// (asking the pace does not count a reconcile); a fleet with allowance left
// is added at once.
func TestPacedHandlerPutsOffABurstInTheQueue(t *testing.T) {
	const interval = time.Hour // nothing comes back during the test
	b := &Builder{pace: newPacer(interval, 2)}
	h := b.paced(handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: o.GetName()}}}
	}))
	q := &recordingQueue{after: map[string]time.Duration{}}
	ev := func(fleet string) {
		h.Generic(context.Background(), event.GenericEvent{Object: &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: fleet}}}, q)
	}
	now := time.Now()
	ev("a")
	if b.pace.wait("a", now) != 0 || b.pace.wait("a", now) != 0 {
		t.Fatal("a fleet's first two reconciles are put off")
	}
	ev("a")
	ev("b")
	if !slices.Equal(q.now, []string{"a", "b"}) {
		t.Fatalf("added at once: %v, want a (before its burst) and b (another fleet)", q.now)
	}
	ev("a")
	if d := q.after["a"]; d <= interval-time.Minute || d > interval {
		t.Fatalf("a burst's event: added after %v, want about %v", d, interval)
	}
	if len(q.now) != 2 {
		t.Fatalf("a burst's event was added at once too: %v", q.now)
	}
	if w := b.pace.wait("a", now); w == 0 {
		t.Fatal("asking the pace from the handler counted a reconcile")
	}
}
