package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func mustPool(t testing.TB, specs ...string) *Pool {
	t.Helper()
	p, err := ParsePool(specs)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseRange(t *testing.T) {
	cases := []struct {
		in, want string
		size     int64
		err      bool
	}{
		// CIDRs: the network and (IPv4) broadcast addresses are not handed out.
		{in: "127.0.10.0/30", want: "127.0.10.0/30", size: 2},
		{in: "127.0.10.7/30", want: "127.0.10.4/30", size: 2},
		{in: "127.0.10.6/31", want: "127.0.10.6/31", size: 2},
		{in: "127.0.10.6/32", want: "127.0.10.6/32", size: 1},
		{in: "10.0.0.1 - 10.0.0.9", want: "10.0.0.1-10.0.0.9", size: 9},
		{in: "10.0.0.5", want: "10.0.0.5", size: 1},
		{in: "fd00::/120", want: "fd00::/120", size: 255},
		{in: "10.0.0.0/7", want: "10.0.0.0/7", size: 1<<25 - 2},
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
	if _, err := ParsePool([]string{"127.0.10.0/24", "127.0.10.200-127.0.11.5"}); err == nil {
		t.Fatal("overlapping ranges were accepted")
	}
	if _, err := ParsePool([]string{"bad", "10.0.0.0/33"}); err == nil {
		t.Fatal("bad ranges were accepted")
	}
}

func TestAllocateLowestFreeThenExhausted(t *testing.T) {
	p := mustPool(t, "127.0.10.4-127.0.10.5", "127.0.10.1")
	al := NewAllocator(0)
	want := []string{"127.0.10.1", "127.0.10.4", "127.0.10.5"}
	for i, w := range want {
		a, err := al.Allocate(p, fmt.Sprintf("o%d", i), "g", netip.Addr{}, t0)
		if err != nil || a.String() != w {
			t.Fatalf("allocation %d = %v, %v; want %s", i, a, err, w)
		}
	}
	if _, err := al.Allocate(p, "late", "g", netip.Addr{}, t0); !errors.Is(err, ErrExhausted) {
		t.Fatalf("allocating from a full pool: %v, want ErrExhausted", err)
	}
	// An owner asking again keeps its address, even when the pool is full.
	if a, err := al.Allocate(p, "o1", "g", netip.Addr{}, t0); err != nil || a.String() != "127.0.10.4" {
		t.Fatalf("re-allocation = %v, %v", a, err)
	}
	al.Release("o1", t0)
	if a, err := al.Allocate(p, "late", "other", netip.Addr{}, t0); err != nil || a.String() != "127.0.10.4" {
		t.Fatalf("after release got %v, %v; want the freed 127.0.10.4 (no quarantine)", a, err)
	}
	if al.Allocated() != 3 || p.Size().Int64() != 3 {
		t.Fatalf("allocated %d of %s, want 3 of 3", al.Allocated(), p.Size())
	}
}

// The finding: the network address of a CIDR pool was handed out.
func TestNetworkAndBroadcastNeverHandedOut(t *testing.T) {
	al := NewAllocator(0)
	p := mustPool(t, "127.0.100.0/29")
	var got []string
	for i := range 10 {
		a, err := al.Allocate(p, fmt.Sprint(i), "g", netip.Addr{}, t0)
		if errors.Is(err, ErrExhausted) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, a.String())
	}
	if fmt.Sprint(got) != "[127.0.100.1 127.0.100.2 127.0.100.3 127.0.100.4 127.0.100.5 127.0.100.6]" {
		t.Fatalf("handed out %v, want .1 to .6", got)
	}
	for _, req := range []string{"127.0.100.0", "127.0.100.7"} {
		if _, err := al.Allocate(p, "req", "g", netip.MustParseAddr(req), t0); !errors.Is(err, ErrReserved) {
			t.Errorf("requesting %s: %v, want ErrReserved", req, err)
		}
	}
	// A range written as a range (not a CIDR) means every address in it.
	r := mustPool(t, "127.0.101.0-127.0.101.1")
	if a, err := al.Allocate(r, "x", "g", netip.Addr{}, t0); err != nil || a.String() != "127.0.101.0" {
		t.Fatalf("explicit range: %v, %v", a, err)
	}
	// IPv6: the subnet-router anycast address (the first) is not handed out.
	v6 := mustPool(t, "fd00::/126")
	if a, err := al.Allocate(v6, "y", "g", netip.Addr{}, t0); err != nil || a.String() != "fd00::1" {
		t.Fatalf("IPv6: %v, %v", a, err)
	}
}

// The finding: two pools that overlap gave one address to two owners.
// One allocator covers every pool, so that cannot happen whatever the pools.
func TestOverlappingPoolsNeverShareAnAddress(t *testing.T) {
	al := NewAllocator(0)
	older := mustPool(t, "127.0.100.0/24")
	younger := mustPool(t, "127.0.100.5-127.0.100.6")
	if _, _, ok := older.Overlaps(younger); !ok {
		t.Fatal("Overlaps missed the overlap")
	}
	held := netip.MustParseAddr("127.0.100.5")
	if _, err := al.Allocate(older, "tenant-a/web", "tenant:a", held, t0); err != nil {
		t.Fatal(err)
	}
	a, err := al.Allocate(younger, "tenant-b/web", "tenant:b", netip.Addr{}, t0)
	if err != nil || a.String() != "127.0.100.6" {
		t.Fatalf("younger pool gave %v, %v; want 127.0.100.6 (127.0.100.5 is held)", a, err)
	}
	var inUse *InUseError
	if _, err := al.Allocate(younger, "tenant-b/other", "tenant:b", held, t0); !errors.As(err, &inUse) || inUse.Group != "tenant:a" {
		t.Fatalf("requesting a held address through another pool: %v", err)
	}
	if _, err := al.Allocate(younger, "tenant-b/third", "tenant:b", netip.Addr{}, t0); !errors.Is(err, ErrExhausted) {
		t.Fatalf("younger pool: %v, want exhausted", err)
	}
}

func TestRequestedAddress(t *testing.T) {
	p := mustPool(t, "127.0.10.0/29")
	al := NewAllocator(0)
	req := netip.MustParseAddr("127.0.10.6")
	if a, err := al.Allocate(p, "a", "g", req, t0); err != nil || a != req {
		t.Fatalf("requested address: %v, %v", a, err)
	}
	var inUse *InUseError
	if _, err := al.Allocate(p, "b", "g", req, t0); !errors.As(err, &inUse) || inUse.Owner != "a" {
		t.Fatalf("taken address: %v, want InUseError naming a", err)
	}
	if _, err := al.Allocate(p, "b", "g", netip.MustParseAddr("127.0.11.1"), t0); !errors.Is(err, ErrNotInPool) {
		t.Fatalf("out-of-pool address: %v, want ErrNotInPool", err)
	}
	// Moving to another requested address frees the old one.
	if _, err := al.Allocate(p, "a", "g", netip.MustParseAddr("127.0.10.5"), t0); err != nil {
		t.Fatal(err)
	}
	if o, _, ok := al.Owner(req); ok {
		t.Fatalf("old address still owned by %s", o)
	}
	// A refused request leaves the owner's current address alone.
	if _, err := al.Allocate(p, "a", "g", netip.MustParseAddr("10.9.9.9"), t0); err == nil {
		t.Fatal("out-of-pool request accepted")
	}
	if cur, _ := al.Lookup("a"); cur.String() != "127.0.10.5" {
		t.Fatalf("owner a lost its address after a refused request: %v", cur)
	}
	// An owner whose address left its pool (the pool changed) gets a new one.
	smaller := mustPool(t, "127.0.10.1-127.0.10.2")
	if a, err := al.Allocate(smaller, "a", "g", netip.Addr{}, t0); err != nil || a.String() != "127.0.10.1" {
		t.Fatalf("after the pool shrank: %v, %v", a, err)
	}
}

func TestQuarantine(t *testing.T) {
	p := mustPool(t, "127.0.12.1-127.0.12.3")
	al := NewAllocator(10 * time.Minute)
	x := netip.MustParseAddr("127.0.12.1")
	if a, _ := al.Allocate(p, "tenant-a/web", "tenant:a", netip.Addr{}, t0); a != x {
		t.Fatalf("got %v", a)
	}
	al.Release("tenant-a/web", t0)

	// Another group gets the next address, and not x when it asks for it.
	if a, err := al.Allocate(p, "tenant-b/web", "tenant:b", netip.Addr{}, t0.Add(time.Minute)); err != nil || a.String() != "127.0.12.2" {
		t.Fatalf("another group got %v, %v; want 127.0.12.2", a, err)
	}
	var q *QuarantinedError
	if _, err := al.Allocate(p, "tenant-b/squat", "tenant:b", x, t0.Add(time.Minute)); !errors.As(err, &q) || !q.Until.Equal(t0.Add(10*time.Minute)) {
		t.Fatalf("another group asking for a quarantined address: %v", err)
	}
	if _, err := al.Allocate(p, "tenant-b/more", "tenant:b", netip.Addr{}, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := al.Allocate(p, "tenant-b/wait", "tenant:b", netip.Addr{}, t0.Add(time.Minute)); !errors.Is(err, ErrExhausted) {
		t.Fatalf("pool with only a quarantined address: %v, want exhausted", err)
	}
	if next, ok := al.NextRelease(p, "tenant:b", t0.Add(time.Minute)); !ok || !next.Equal(t0.Add(10*time.Minute)) {
		t.Fatalf("NextRelease = %v, %v", next, ok)
	}
	if _, ok := al.NextRelease(p, "tenant:a", t0.Add(time.Minute)); ok {
		t.Fatal("the group that released the address waits for it")
	}
	// The same group takes it back at once (the Service was recreated).
	if a, err := al.Allocate(p, "tenant-a/web", "tenant:a", netip.Addr{}, t0.Add(time.Minute)); err != nil || a != x {
		t.Fatalf("the releasing group got %v, %v; want %v back", a, err, x)
	}
	al.Release("tenant-a/web", t0.Add(2*time.Minute))
	// Persisted and restored by a new allocator (a manager restart).
	saved := al.Quarantined(p, t0.Add(3*time.Minute))
	if len(saved) != 1 || saved[0].Addr != x || saved[0].Group != "tenant:a" {
		t.Fatalf("Quarantined = %+v", saved)
	}
	restarted := NewAllocator(10 * time.Minute)
	for _, r := range saved {
		restarted.Restore(r.Addr, r.Group, r.Until, t0.Add(3*time.Minute))
	}
	if _, err := restarted.Allocate(p, "tenant-b/squat", "tenant:b", x, t0.Add(5*time.Minute)); !errors.As(err, &q) {
		t.Fatalf("after a restart another group got the quarantined address: %v", err)
	}
	// When the quarantine is over anyone may take it.
	if a, err := restarted.Allocate(p, "tenant-b/wait", "tenant:b", netip.Addr{}, t0.Add(12*time.Minute)); err != nil || a != x {
		t.Fatalf("after the quarantine: %v, %v", a, err)
	}
}

// The controller rebuilds state from status after a restart: every address
// comes back to the same owner and new allocations avoid them.
func TestRebuildFromStatusIsStable(t *testing.T) {
	p := mustPool(t, "127.0.20.0/28")
	first := NewAllocator(0)
	held := map[string]netip.Addr{}
	for i := range 10 {
		o := fmt.Sprintf("tenant-a/svc-%d", i)
		a, err := first.Allocate(p, o, "g", netip.Addr{}, t0)
		if err != nil {
			t.Fatal(err)
		}
		held[o] = a
	}
	first.Release("tenant-a/svc-3", t0)
	delete(held, "tenant-a/svc-3")

	restarted := NewAllocator(0)
	for o, a := range held {
		if err := restarted.Reserve(o, "g", a); err != nil {
			t.Fatal(err)
		}
	}
	for o, a := range held {
		if got, err := restarted.Allocate(p, o, "g", netip.Addr{}, t0); err != nil || got != a {
			t.Fatalf("%s: got %v after restart, had %v (%v)", o, got, a, err)
		}
	}
	a, err := restarted.Allocate(p, "tenant-b/new", "h", netip.Addr{}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if o, _, _ := first.Owner(a); o != "" {
		t.Fatalf("new allocation %v collides with live owner %s", a, o)
	}
	if err := restarted.Reserve("tenant-b/other", "h", a); err == nil {
		t.Fatal("reserving an owned address for a second owner succeeded")
	}
}

func BenchmarkAllocate10k(b *testing.B) {
	for b.Loop() {
		p := mustPool(b, "10.0.0.0/16")
		al := NewAllocator(time.Minute)
		for i := range 10000 {
			if _, err := al.Allocate(p, fmt.Sprint(i), "g", netip.Addr{}, t0); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// A range whose ends are of two families once unmapped is refused (found by
// fuzzing: Allocate looped forever over it).
func TestRangeAcrossFamiliesIsRefused(t *testing.T) {
	if r, err := ParseRange("::ffff:10.0.0.1-ffff::1"); err == nil {
		t.Fatalf("parsed %v", r)
	}
}
