package snapshot

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// A Programmed condition written is not written again while the cache still
// shows the object as it was when the write was decided; a newer version of
// the object, another condition or another object is decided afresh.
func TestWrittenConditionIsNotWrittenAgainUntilTheCacheMoves(t *testing.T) {
	lb := &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: "web", UID: "uid-1", ResourceVersion: "10", Generation: 1}}
	cond := metav1.Condition{Type: v1.ConditionProgrammed, Status: metav1.ConditionTrue, Reason: v1.ReasonProgrammed, Message: "served by fleet default", ObservedGeneration: 1}
	var m writtenMemo
	if m.pending(lb, &cond) {
		t.Fatal("nothing written yet, but the condition counts as written")
	}
	m.record(lb, &cond, "11")
	if !m.pending(lb, &cond) {
		t.Fatal("written at resourceVersion 10 and the cache still shows 10: it must not be written again")
	}

	other := cond
	other.ObservedGeneration = 2
	if m.pending(lb, &other) {
		t.Error("another generation's condition counts as written")
	}
	other = cond
	other.Status, other.Reason = metav1.ConditionFalse, v1.ReasonInvalidSpec
	if m.pending(lb, &other) {
		t.Error("another status counts as written")
	}

	moved := lb.DeepCopy()
	moved.ResourceVersion = "11" // the cache moved on: trust what it shows
	if m.pending(moved, &cond) {
		t.Error("a newer version of the object is not decided afresh (a condition someone removed would never come back)")
	}
	again := lb.DeepCopy()
	again.UID = "uid-2" // deleted and created again under the same name
	if m.pending(again, &cond) {
		t.Error("a new object of the same name counts as written")
	}
}
