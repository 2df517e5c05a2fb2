package upstream

import (
	"container/heap"
	"sync"
	"time"
)

// maxChecksInFlight bounds the health checks in flight over every cluster, so
// that hosts whose checks fall due together (all of them when the proxy
// starts: Envoy's initial_jitter defaults to 0) do not each hold a goroutine
// and a socket at once; the others wait in the queue.
const maxChecksInFlight = 512

// checks is the process's one health-check scheduler: a host waiting for its
// next check is an entry in a queue ordered by due time, and one goroutine
// starts each check when it is due and a slot is free. An idle host costs no
// goroutine and no timer.
var checks = &checkScheduler{wake: make(chan struct{}, 1), slots: make(chan struct{}, maxChecksInFlight)}

type checkScheduler struct {
	mu    sync.Mutex
	queue checkQueue
	slots chan struct{} // one per check in flight
	once  sync.Once
	wake  chan struct{} // the earliest due time may have changed
}

// dueCheck is a host's next check.
type dueCheck struct {
	at    time.Time
	c     *cluster
	h     *host
	index int // in the queue
}

// scheduleLocked queues h's next check after d; c.mu is held (lock order:
// cluster, then scheduler).
func (s *checkScheduler) scheduleLocked(c *cluster, h *host, d time.Duration) {
	s.once.Do(func() { go s.run() })
	s.mu.Lock()
	e := &dueCheck{at: time.Now().Add(d), c: c, h: h}
	heap.Push(&s.queue, e)
	h.hcDue = e
	first := e.index == 0
	s.mu.Unlock()
	if first {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// cancelLocked drops h's queued check; c.mu is held.
func (s *checkScheduler) cancelLocked(h *host) {
	e := h.hcDue
	if e == nil {
		return
	}
	s.mu.Lock()
	if e.index >= 0 {
		heap.Remove(&s.queue, e.index)
	}
	s.mu.Unlock()
	h.hcDue = nil
}

func (s *checkScheduler) run() {
	timer := time.NewTimer(time.Hour)
	for {
		s.mu.Lock()
		slots := s.slots
		var wait time.Duration = -1
		var due *dueCheck
		if len(s.queue) > 0 {
			if wait = time.Until(s.queue[0].at); wait <= 0 {
				due = heap.Pop(&s.queue).(*dueCheck)
			}
		}
		s.mu.Unlock()
		if due == nil {
			if wait > 0 {
				timer.Reset(wait)
				select {
				case <-timer.C:
				case <-s.wake:
				}
			} else {
				<-s.wake
			}
			continue
		}
		slots <- struct{}{} // while every slot is taken, due checks wait here
		go func() {
			defer func() { <-slots }()
			due.c.checkHost(due.h, due)
		}()
	}
}

// checkQueue is a min-heap of due checks (container/heap).
type checkQueue []*dueCheck

func (q checkQueue) Len() int           { return len(q) }
func (q checkQueue) Less(i, j int) bool { return q[i].at.Before(q[j].at) }
func (q checkQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index, q[j].index = i, j
}
func (q *checkQueue) Push(x any) {
	e := x.(*dueCheck)
	e.index = len(*q)
	*q = append(*q, e)
}
func (q *checkQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	e.index = -1
	return e
}
