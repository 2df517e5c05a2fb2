package snapshot

import (
	"context"
	"errors"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
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

// writeProgrammed writes Programmed conditions (each differs from what its
// object carries: programmedIs), StatusWorkers at a time. "Waiting for the proxies" is not
// written while proxies of the fleet are connected here: their ACK follows
// within moments and brings the final condition, so it would only double the
// writes (a stale observedGeneration already says the object is not
// programmed yet). Without a proxy connected here it is written, so a fleet
// with no proxy says why nothing is Programmed (with proxies only on other
// replicas that costs a write, nothing else).
func (b *Builder) writeProgrammed(ctx context.Context, fleet string, writes []programmedWrite) error {
	if b.WriteStatus != nil && !b.WriteStatus() {
		return nil
	}
	skipWaiting := false
	if pc, ok := b.XDS.(ProxyCounter); ok {
		skipWaiting = pc.Proxies(fleet) > 0
	}
	workers := b.StatusWorkers
	if workers <= 0 {
		workers = DefaultStatusWorkers
	}
	slots := make(chan struct{}, workers)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	for _, w := range writes {
		cur := meta.FindStatusCondition(conditionsOf(w.obj), v1.ConditionProgrammed)
		if skipWaiting && w.cond.Status == metav1.ConditionFalse && w.cond.Message == waitingMessage(fleet) {
			continue
		}
		if b.written.pending(w.obj, &w.cond) {
			continue // written already; the cache has not seen it yet
		}
		w.cond.LastTransitionTime = now
		if cur != nil && cur.Status == w.cond.Status {
			w.cond.LastTransitionTime = cur.LastTransitionTime
		}
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			if err := b.applyProgrammed(ctx, w); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			b.written.record(w.obj, &w.cond)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
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
	resourceVersion    string
	status             metav1.ConditionStatus
	reason, message    string
	observedGeneration int64
	at                 time.Time
}

// writtenTTL bounds how long an entry is kept: beyond it a cache still
// behind costs one write more, nothing else.
const writtenTTL = 2 * time.Minute

func (m *writtenMemo) pending(o client.Object, c *metav1.Condition) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[o.GetUID()]
	return ok && e.resourceVersion == o.GetResourceVersion() && e.status == c.Status && e.reason == c.Reason &&
		e.message == c.Message && e.observedGeneration == c.ObservedGeneration
}

func (m *writtenMemo) record(o client.Object, c *metav1.Condition) {
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
	m.entries[o.GetUID()] = writtenEntry{resourceVersion: o.GetResourceVersion(), status: c.Status, reason: c.Reason,
		message: c.Message, observedGeneration: c.ObservedGeneration, at: now}
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
// that condition alone. The object (shared with the cache) is not modified.
func (b *Builder) applyProgrammed(ctx context.Context, w programmedWrite) error {
	kind := "LoadBalancer"
	if _, ok := w.obj.(*v1.Route); ok {
		kind = "Route"
	}
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(v1.GroupVersion.String())
	u.SetKind(kind)
	u.SetNamespace(w.obj.GetNamespace())
	u.SetName(w.obj.GetName())
	c := w.cond
	u.Object["status"] = map[string]any{"conditions": []any{map[string]any{
		"type": c.Type, "status": string(c.Status), "reason": c.Reason, "message": c.Message,
		"observedGeneration": c.ObservedGeneration, "lastTransitionTime": c.LastTransitionTime.UTC().Format(time.RFC3339),
	}}}
	err := b.Client.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldOwner), client.ForceOwnership)
	return client.IgnoreNotFound(err)
}
