package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// FuzzAllocator drives one allocator over overlapping pools with a stream of
// allocations, requests, releases and clock steps, and checks after each step
// what tenants rely on: an address has one holder whatever the pools, a pool
// hands out only its own non-reserved addresses, and a released address goes
// to another group only after its quarantine.
func FuzzAllocator(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add([]byte{0x10, 0x21, 0x32, 0x43, 0x54, 0x65, 0x76, 0x87, 0x98, 0xa9, 0xba, 0xcb})
	f.Add([]byte{3, 3, 3, 0x83, 0x83, 0xff, 0x03, 0x13, 0x23})
	pools := []*Pool{
		mustPool(f, "127.0.100.0/29"),
		mustPool(f, "127.0.100.4-127.0.100.9"), // overlaps the first
		mustPool(f, "127.0.100.6/31", "127.0.100.12"),
	}
	const quarantine = 10 * time.Minute
	f.Fuzz(func(t *testing.T, ops []byte) {
		al := NewAllocator(quarantine)
		now := t0
		// released[a]: group and time of the last release, from the outside.
		type rel struct {
			group string
			at    time.Time
		}
		released := map[netip.Addr]rel{}
		holders := map[string]netip.Addr{}
		for i := 0; i+1 < len(ops) && i < 400; i += 2 {
			op, arg := ops[i], ops[i+1]
			p := pools[int(arg)%len(pools)]
			owner := fmt.Sprintf("o%d", arg>>4&7)
			group := fmt.Sprintf("g%d", arg>>4&1) // owners of one parity share a group
			switch op % 4 {
			case 0, 1: // allocate, with or without a requested address
				var req netip.Addr
				if op%4 == 1 {
					req = netip.AddrFrom4([4]byte{127, 0, 100, op >> 4})
				}
				prev, had := al.Lookup(owner)
				a, err := al.Allocate(p, owner, group, req, now)
				if cur, ok := al.Lookup(owner); had && (!ok || cur != prev) {
					// It moved, or lost an address its pool does not have.
					released[prev] = rel{group, now}
					delete(holders, owner)
				}
				if err != nil {
					var q *QuarantinedError
					if errors.As(err, &q) && !now.Before(q.Until) {
						t.Fatalf("quarantine of %s reported over at %s", q.Addr, q.Until)
					}
					continue
				}
				if !p.Allocatable(a) {
					t.Fatalf("handed out %s, not allocatable in its pool", a)
				}
				if r, ok := released[a]; ok && a != prev && r.group != group && now.Before(r.at.Add(quarantine)) {
					t.Fatalf("%s of %s went to %s %s after its release", a, r.group, group, now.Sub(r.at))
				}
				holders[owner] = a
				delete(released, a)
			case 2: // release
				if a, ok := al.Release(owner, now); ok {
					if holders[owner] != a {
						t.Fatalf("released %s, held %s", a, holders[owner])
					}
					released[a] = rel{group, now}
					delete(holders, owner)
				}
			case 3: // time passes
				now = now.Add(time.Duration(op>>2) * 15 * time.Second)
			}
			seen := map[netip.Addr]string{}
			for o, a := range holders {
				if other, dup := seen[a]; dup {
					t.Fatalf("%s held by %s and %s", a, o, other)
				}
				seen[a] = o
				if got, _ := al.Lookup(o); got != a {
					t.Fatalf("%s holds %s, allocator says %s", o, a, got)
				}
			}
			if al.Allocated() != len(holders) {
				t.Fatalf("allocator counts %d held, %d holders", al.Allocated(), len(holders))
			}
		}
	})
}
