package main

import (
	"maps"
	"testing"
	"time"
)

// TestSettledNeedsConsecutiveFinishedAnswers: failover is complete only at n
// consecutive answers from the target cluster, in start order, with nothing
// before them still running; failures before that are counted by kind.
func TestSettledNeedsConsecutiveFinishedAnswers(t *testing.T) {
	t0 := time.Now()
	var tr traffic
	add := func(cluster, failure string, done bool) {
		start := t0.Add(time.Duration(len(tr.results)) * 20 * time.Millisecond)
		took := 5 * time.Millisecond
		if len(tr.results) == 2 {
			took = time.Second // answered after a connect timeout and a retry
		}
		tr.results = append(tr.results, result{start: start, end: start.Add(took), done: done, cluster: cluster, failure: failure})
	}
	add("east", "", true) // before the kill
	add("", "refused", true)
	add("west", "", true)
	add("", "timeout", false) // still running
	add("west", "", true)
	add("west", "", true)
	if _, _, _, ok := tr.settled(1, "west", 2); ok {
		t.Fatal("settled while an earlier request is still running")
	}
	tr.results[3].done = true
	first, failed, slowest, ok := tr.settled(1, "west", 2)
	if !ok || first != 4 {
		t.Fatalf("settled = %d %v, want the run starting at 4", first, ok)
	}
	if want := map[string]int{"refused": 1, "timeout": 1}; !maps.Equal(failed, want) {
		t.Fatalf("failed = %v, want %v", failed, want)
	}
	if slowest != time.Second {
		t.Fatalf("slowest answered request %v, want the 1s one", slowest)
	}
	if _, _, _, ok := tr.settled(1, "west", 3); ok {
		t.Fatal("settled with only 2 consecutive answers, want 3")
	}
}
