package snapshot

import (
	"testing"
	"time"
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
