package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
)

func TestParseRange(t *testing.T) {
	cases := []struct {
		in, want string
		size     int64
		err      bool
	}{
		{in: "127.0.10.0/30", want: "127.0.10.0-127.0.10.3", size: 4},
		{in: "127.0.10.7/30", want: "127.0.10.4-127.0.10.7", size: 4},
		{in: "10.0.0.1 - 10.0.0.9", want: "10.0.0.1-10.0.0.9", size: 9},
		{in: "10.0.0.5", want: "10.0.0.5", size: 1},
		{in: "fd00::/120", want: "fd00::-fd00::ff", size: 256},
		{in: "10.0.0.0/7", want: "10.0.0.0-11.255.255.255", size: 1 << 25},
		{in: "10.0.0.9-10.0.0.1", err: true},
		{in: "10.0.0.1-fd00::1", err: true},
		{in: "10.0.0/24", err: true},
		{in: "not-an-ip", err: true},
	}
	for _, c := range cases {
		r, err := ParseRange(c.in)
		if c.err {
			if err == nil {
				t.Errorf("ParseRange(%q) = %v, want an error", c.in, r)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseRange(%q): %v", c.in, err)
			continue
		}
		if r.String() != c.want || r.Size().Int64() != c.size {
			t.Errorf("ParseRange(%q) = %s (size %s), want %s (size %d)", c.in, r, r.Size(), c.want, c.size)
		}
	}
}

func TestOverlappingRangesRefused(t *testing.T) {
	if _, err := Parse([]string{"127.0.10.0/24", "127.0.10.200-127.0.11.5"}); err == nil {
		t.Fatal("overlapping ranges were accepted")
	}
	if _, err := Parse([]string{"bad", "10.0.0.0/33"}); err == nil {
		t.Fatal("bad ranges were accepted")
	}
}

func TestAllocateLowestFreeThenExhausted(t *testing.T) {
	al, err := Parse([]string{"127.0.10.4-127.0.10.5", "127.0.10.1"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"127.0.10.1", "127.0.10.4", "127.0.10.5"}
	for i, w := range want {
		a, err := al.Allocate(fmt.Sprintf("o%d", i), netip.Addr{})
		if err != nil || a.String() != w {
			t.Fatalf("allocation %d = %v, %v; want %s", i, a, err, w)
		}
	}
	if _, err := al.Allocate("late", netip.Addr{}); !errors.Is(err, ErrExhausted) {
		t.Fatalf("allocating from a full pool: %v, want ErrExhausted", err)
	}
	// An owner asking again keeps its address, even when the pool is full.
	if a, err := al.Allocate("o1", netip.Addr{}); err != nil || a.String() != "127.0.10.4" {
		t.Fatalf("re-allocation = %v, %v", a, err)
	}
	al.Release("o1")
	if a, err := al.Allocate("late", netip.Addr{}); err != nil || a.String() != "127.0.10.4" {
		t.Fatalf("after release got %v, %v; want the freed 127.0.10.4", a, err)
	}
	if al.Allocated() != 3 || al.Size().Int64() != 3 {
		t.Fatalf("allocated %d of %s, want 3 of 3", al.Allocated(), al.Size())
	}
}

func TestRequestedAddress(t *testing.T) {
	al, _ := Parse([]string{"127.0.10.0/29"})
	req := netip.MustParseAddr("127.0.10.6")
	if a, err := al.Allocate("a", req); err != nil || a != req {
		t.Fatalf("requested address: %v, %v", a, err)
	}
	var inUse *InUseError
	if _, err := al.Allocate("b", req); !errors.As(err, &inUse) || inUse.Owner != "a" {
		t.Fatalf("taken address: %v, want InUseError naming a", err)
	}
	if _, err := al.Allocate("b", netip.MustParseAddr("127.0.11.1")); !errors.Is(err, ErrNotInPool) {
		t.Fatalf("out-of-pool address: %v, want ErrNotInPool", err)
	}
	// Moving to another requested address frees the old one.
	if _, err := al.Allocate("a", netip.MustParseAddr("127.0.10.7")); err != nil {
		t.Fatal(err)
	}
	if o, ok := al.Owner(req); ok {
		t.Fatalf("old address still owned by %s", o)
	}
	// A refused request leaves the owner's current address alone.
	if _, err := al.Allocate("a", netip.MustParseAddr("10.9.9.9")); err == nil {
		t.Fatal("out-of-pool request accepted")
	}
	if cur, _ := al.Lookup("a"); cur.String() != "127.0.10.7" {
		t.Fatalf("owner a lost its address after a refused request: %v", cur)
	}
}

// The controller rebuilds state from status after a restart: every address
// comes back to the same owner and new allocations avoid them.
func TestRebuildFromStatusIsStable(t *testing.T) {
	first, _ := Parse([]string{"127.0.20.0/28"})
	held := map[string]netip.Addr{}
	for i := range 10 {
		o := fmt.Sprintf("tenant-a/svc-%d", i)
		a, err := first.Allocate(o, netip.Addr{})
		if err != nil {
			t.Fatal(err)
		}
		held[o] = a
	}
	first.Release("tenant-a/svc-3")
	delete(held, "tenant-a/svc-3")

	restarted, _ := Parse([]string{"127.0.20.0/28"})
	for o, a := range held {
		if err := restarted.Reserve(o, a); err != nil {
			t.Fatal(err)
		}
	}
	for o, a := range held {
		if got, err := restarted.Allocate(o, netip.Addr{}); err != nil || got != a {
			t.Fatalf("%s: got %v after restart, had %v (%v)", o, got, a, err)
		}
	}
	a, err := restarted.Allocate("tenant-b/new", netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := first.Owner(a); o != "" {
		t.Fatalf("new allocation %v collides with live owner %s", a, o)
	}
	if err := restarted.Reserve("tenant-b/other", a); err == nil {
		t.Fatal("reserving an owned address for a second owner succeeded")
	}
}

func BenchmarkAllocate10k(b *testing.B) {
	for b.Loop() {
		al, _ := Parse([]string{"10.0.0.0/16"})
		for i := range 10000 {
			if _, err := al.Allocate(fmt.Sprint(i), netip.Addr{}); err != nil {
				b.Fatal(err)
			}
		}
	}
}
