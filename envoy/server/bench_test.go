package server

import (
	"testing"
	"time"

	"github.com/go-logr/logr"
)

// BenchmarkApplySnapshot10k measures building, validating, hashing and
// setting a 10k-cluster snapshot (what one coalesced Set costs the manager).
func BenchmarkApplySnapshot10k(b *testing.B) {
	s := New(Options{Log: logr.Discard()})
	a, c := clusters(10000, time.Second), clusters(10000, 2*time.Second)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		res := a
		if i%2 == 1 {
			res = c // alternate, so every apply is a real change
		}
		i++
		if err := s.apply(fleet, &pendingSet{resources: res, gen: uint64(i), first: time.Now()}); err != nil {
			b.Fatal(err)
		}
	}
}
