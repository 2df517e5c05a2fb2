package snapshot

import (
	"context"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// DefaultStatusWorkers is how many Programmed conditions are written at once
// when Builder.StatusWorkers is 0.
const DefaultStatusWorkers = 16

// FieldOwner is the server-side-apply field manager of the Programmed
// condition: the builder owns that one entry of status.conditions (a map
// keyed by type), admission owns the others, so neither write can undo the
// other's and none needs an optimistic lock.
const FieldOwner = "fleetlb-snapshot"

// ProxyCounter is the part of envoy/server that says how many proxies of a
// fleet are connected here.
type ProxyCounter interface {
	Proxies(fleet string) int
}

type programmedWrite struct {
	obj  client.Object
	cond metav1.Condition
}

func waitingMessage(fleet string) string {
	return "waiting for every proxy of fleet " + fleet + " to acknowledge the configuration"
}

// writeProgrammed hands Programmed conditions (each differs from what its
// object carries: needsProgrammedWrite) to the status writer and returns at
// once: one ACK can program thousands of objects, and the fleet's next
// change must not wait for thousands of API writes. "Waiting for the proxies" is not
// written while proxies of the fleet are connected here: their ACK follows
// within moments and brings the final condition, so it would only double the
// writes (a stale observedGeneration already says the object is not
// programmed yet). Without a proxy connected here it is written, so a fleet
// with no proxy says why nothing is Programmed (with proxies only on other
// replicas that costs a write, nothing else).
func (b *Builder) writeProgrammed(_ context.Context, fleet string, writes []programmedWrite) error {
	if !b.writesStatus() {
		b.status.dropAll()
		return nil
	}
	if b.onWrites != nil {
		b.onWrites(writes) // a test plays the writes in place of the writer
		return nil
	}
	skipWaiting := false
	if pc, ok := b.XDS.(ProxyCounter); ok {
		skipWaiting = pc.Proxies(fleet) > 0
	}
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	for _, w := range writes {
		if skipWaiting && w.cond.Status == metav1.ConditionFalse && w.cond.Message == waitingMessage(fleet) {
			continue
		}
		cur := meta.FindStatusCondition(conditionsOf(w.obj), v1.ConditionProgrammed)
		w.cond.LastTransitionTime = now
		if cur != nil && cur.Status == w.cond.Status {
			w.cond.LastTransitionTime = cur.LastTransitionTime
		}
		b.status.desire(w)
	}
	return nil
}

func (b *Builder) writesStatus() bool { return b.WriteStatus == nil || b.WriteStatus() }

// needsProgrammedWrite reports whether c must be handed to writeProgrammed
// for o: o's Programmed differs from c, or the status writer holds something
// for o that c must replace or confirm (a pending or in-flight write, a write
// the cache does not show yet).
func (b *Builder) needsProgrammedWrite(o client.Object, c *metav1.Condition) bool {
	return b.status.needs(o, c)
}

// ownProgrammedEcho reports whether o (from a watch event) is the version
// this replica's own Programmed write made: the write's echo, which needs no
// reconcile (a reconcile no longer waits for the writes, so without this
// every write came back as one more rebuild of the fleet).
func (b *Builder) ownProgrammedEcho(o client.Object) bool {
	return b.status.written.ownEcho(o)
}

// statusKey names the object a Programmed condition is written to.
type statusKey struct {
	kind string
	types.NamespacedName
}

func statusKeyOf(o client.Object) statusKey {
	return statusKey{kind: kindOf(o), NamespacedName: client.ObjectKeyFromObject(o)}
}

func kindOf(o client.Object) string {
	if _, ok := o.(*v1.Route); ok {
		return "Route"
	}
	return "LoadBalancer"
}

// statusWriter writes Programmed conditions off the reconcile: per object it
// keeps the latest desired condition only (a burst of ACKs costs one write,
// not one per ACK); StatusWorkers write at once; a failed write is retried
// with backoff unless a newer condition replaced it; a condition that changes
// while its write is in flight is written after it (the workqueue hands a key
// to one worker at a time and requeues one added meanwhile).
type statusWriter struct {
	mu      sync.Mutex
	queue   workqueue.TypedRateLimitingInterface[statusKey]
	want    map[statusKey]programmedWrite // desired, not yet taken by a worker
	busy    map[statusKey]programmedWrite // being written
	written writtenMemo                   // written, not yet in the cache
}

// Backoff of a failed write: from retryBase, doubling, at most retryMax.
const (
	retryBase = 50 * time.Millisecond
	retryMax  = 30 * time.Second
)

// prepare makes the queue; mu is held.
func (s *statusWriter) prepare() {
	if s.queue == nil {
		s.queue = workqueue.NewTypedRateLimitingQueue(workqueue.NewTypedItemExponentialFailureRateLimiter[statusKey](retryBase, retryMax))
		s.want, s.busy = map[statusKey]programmedWrite{}, map[statusKey]programmedWrite{}
	}
}

func sameCondition(a, b *metav1.Condition) bool {
	return a.Status == b.Status && a.Reason == b.Reason && a.Message == b.Message && a.ObservedGeneration == b.ObservedGeneration
}

// onServer is what o's Programmed condition is on the server as far as this
// writer knows: the condition in flight, else the one written at the
// resourceVersion the cache still shows, else what the cache shows.
// inFlight says a write is under way (it may yet fail).
func (s *statusWriter) onServer(o client.Object, key statusKey) (c *metav1.Condition, inFlight bool) {
	if w, ok := s.busy[key]; ok && w.obj.GetUID() == o.GetUID() {
		c := w.cond // copied here, so only a hit allocates
		return &c, true
	}
	if e, ok := s.written.at(o); ok {
		return &metav1.Condition{Status: e.status, Reason: e.reason, Message: e.message, ObservedGeneration: e.observedGeneration}, false
	}
	return meta.FindStatusCondition(conditionsOf(o), v1.ConditionProgrammed), false
}

// desire records w as the condition its object is to carry (latest wins).
// One equal to what the object carries, to what was written and the cache
// does not show yet, or to the write in flight, is dropped, with any older
// condition still waiting.
func (s *statusWriter) desire(w programmedWrite) {
	key := statusKeyOf(w.obj)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prepare()
	if cur, _ := s.onServer(w.obj, key); cur != nil && sameCondition(cur, &w.cond) {
		s.unwant(key)
		return
	}
	if _, ok := s.want[key]; !ok {
		statusQueueDepth.Inc()
	}
	s.want[key] = w
	s.queue.Add(key)
}

func (s *statusWriter) needs(o client.Object, c *metav1.Condition) bool {
	key := statusKeyOf(o)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.want[key]; ok {
		return true
	}
	cur, inFlight := s.onServer(o, key)
	return inFlight || cur == nil || !sameCondition(cur, c)
}

// unwant drops the condition waiting for key, if any; mu is held.
func (s *statusWriter) unwant(key statusKey) {
	if _, ok := s.want[key]; ok {
		delete(s.want, key)
		statusQueueDepth.Dec()
	}
}

// dropAll forgets every condition waiting (this replica no longer writes).
func (s *statusWriter) dropAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.want); n > 0 {
		statusWrites.WithLabelValues("dropped").Add(float64(n))
		statusQueueDepth.Sub(float64(n))
		clear(s.want)
	}
}

// statusRunner runs the writer's workers with the manager: on every
// replica, since leadership is checked per write (WriteStatus).
type statusRunner struct{ b *Builder }

func (statusRunner) NeedLeaderElection() bool { return false }

func (r statusRunner) Start(ctx context.Context) error {
	r.b.runStatusWriter(ctx)
	return nil
}

// runStatusWriter runs StatusWorkers writers until ctx ends.
func (b *Builder) runStatusWriter(ctx context.Context) {
	s := &b.status
	s.mu.Lock()
	s.prepare()
	q := s.queue
	s.mu.Unlock()
	workers := b.StatusWorkers
	if workers <= 0 {
		workers = DefaultStatusWorkers
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				key, shutdown := q.Get()
				if shutdown {
					return
				}
				b.writeOne(ctx, key)
				q.Done(key)
			}
		})
	}
	<-ctx.Done()
	q.ShutDown()
	wg.Wait()
}

// writeOne writes the condition waiting for key, if any.
func (b *Builder) writeOne(ctx context.Context, key statusKey) {
	s := &b.status
	s.mu.Lock()
	w, ok := s.want[key]
	if !ok || ctx.Err() != nil { // nothing waits, or the manager stops (the queue hands out what it holds)
		s.mu.Unlock()
		s.queue.Forget(key)
		return
	}
	s.unwant(key)
	if !b.writesStatus() {
		s.mu.Unlock()
		statusWrites.WithLabelValues("dropped").Inc()
		s.dropAll() // leadership lost: the next leader decides afresh
		s.queue.Forget(key)
		return
	}
	s.busy[key] = w
	s.mu.Unlock()

	wrote, err := b.applyProgrammed(ctx, w)

	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.busy, key)
	switch {
	case err == nil:
		statusWrites.WithLabelValues("written").Inc()
		s.written.record(w.obj, &w.cond, wrote)
		s.queue.Forget(key)
	case apierrors.IsNotFound(err):
		statusWrites.WithLabelValues("not_found").Inc()
		s.queue.Forget(key)
	default:
		statusWrites.WithLabelValues("failed").Inc()
		if _, newer := s.want[key]; newer || ctx.Err() != nil {
			s.queue.Forget(key) // the newer condition is written next
			return
		}
		b.Log.Error(err, "writing Programmed, will retry", "kind", key.kind, "namespace", key.Namespace, "name", key.Name)
		s.want[key] = w
		statusQueueDepth.Inc()
		s.queue.AddRateLimited(key)
	}
}

// writtenMemo remembers the Programmed conditions written, until the cache
// shows the object again. A reconcile that follows a write before its watch
// event (the next ACK, a burst) still reads the object without it; writing
// it again cost a fifth of the LoadBalancer status writes at 10 000 objects.
// An entry holds only while the cache shows the very resourceVersion the
// write was decided on: any newer version is trusted as it is (so a
// condition someone else removed is written again).
type writtenMemo struct {
	mu      sync.Mutex
	entries map[types.UID]writtenEntry
	pruned  time.Time
}

type writtenEntry struct {
	resourceVersion    string // the object's, when the write was decided
	wrote              string // the object's after the write: its watch event is the write's own echo
	status             metav1.ConditionStatus
	reason, message    string
	observedGeneration int64
	at                 time.Time
}

// writtenTTL bounds how long an entry is kept: beyond it a cache still
// behind costs one write more, nothing else.
const writtenTTL = 2 * time.Minute

func (m *writtenMemo) pending(o client.Object, c *metav1.Condition) bool {
	e, ok := m.at(o)
	return ok && e.status == c.Status && e.reason == c.Reason && e.message == c.Message && e.observedGeneration == c.ObservedGeneration
}

// at is the condition written to o while the cache still shows o at the
// resourceVersion that write was decided on.
func (m *writtenMemo) at(o client.Object) (writtenEntry, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[o.GetUID()]
	return e, ok && e.resourceVersion == o.GetResourceVersion()
}

func (m *writtenMemo) record(o client.Object, c *metav1.Condition, wrote string) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.entries == nil {
		m.entries = map[types.UID]writtenEntry{}
	}
	if now.Sub(m.pruned) > writtenTTL/4 {
		m.pruned = now
		for uid, e := range m.entries {
			if now.Sub(e.at) > writtenTTL {
				delete(m.entries, uid)
			}
		}
	}
	m.entries[o.GetUID()] = writtenEntry{resourceVersion: o.GetResourceVersion(), wrote: wrote, status: c.Status, reason: c.Reason,
		message: c.Message, observedGeneration: c.ObservedGeneration, at: now}
}

// ownEcho reports whether o, as a watch event shows it, is the very version
// a Programmed write of this writer made: the event brings nothing the
// builder has not decided already, so it needs no rebuild of the fleet.
func (m *writtenMemo) ownEcho(o client.Object) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[o.GetUID()]
	return ok && e.wrote != "" && e.wrote == o.GetResourceVersion()
}

// programmedIs reports whether o's Programmed condition already says c
// (a condition is never rewritten unchanged).
func programmedIs(o client.Object, c *metav1.Condition) bool {
	cur := meta.FindStatusCondition(conditionsOf(o), v1.ConditionProgrammed)
	return cur != nil && cur.Status == c.Status && cur.Reason == c.Reason && cur.Message == c.Message && cur.ObservedGeneration == c.ObservedGeneration
}

func conditionsOf(o client.Object) []metav1.Condition {
	switch o := o.(type) {
	case *v1.LoadBalancer:
		return o.Status.Conditions
	case *v1.Route:
		return o.Status.Conditions
	}
	return nil
}

// applyProgrammed writes one Programmed condition by server-side apply of
// that condition alone, and returns the object's resourceVersion after it.
// The object (shared with the cache) is not modified.
func (b *Builder) applyProgrammed(ctx context.Context, w programmedWrite) (resourceVersion string, err error) {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(v1.GroupVersion.String())
	u.SetKind(kindOf(w.obj))
	u.SetNamespace(w.obj.GetNamespace())
	u.SetName(w.obj.GetName())
	c := w.cond
	u.Object["status"] = map[string]any{"conditions": []any{map[string]any{
		"type": c.Type, "status": string(c.Status), "reason": c.Reason, "message": c.Message,
		"observedGeneration": c.ObservedGeneration, "lastTransitionTime": c.LastTransitionTime.UTC().Format(time.RFC3339),
	}}}
	if err := b.Client.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return "", err
	}
	return u.GetResourceVersion(), nil // the response, decoded into u
}
