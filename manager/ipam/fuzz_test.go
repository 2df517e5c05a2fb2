package ipam

import (
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"strings"
	"testing"
)

// FuzzAllocator drives an allocator with a sequence of Allocate, Reserve and
// Release calls for a few owners and holds its promises after every call: an
// address has at most one owner, every held address is inside the pool, an
// operation on one owner never moves or frees another owner's address, and
// what Allocate returns is what the owner then holds.
func FuzzAllocator(f *testing.F) {
	f.Add("127.0.100.0/30", []byte{0, 0, 0, 0, 1, 0, 0, 2, 0, 0, 3, 0, 3, 0, 0, 0, 4, 0})
	f.Add("10.0.0.1-10.0.0.3,10.0.0.8/30", []byte{1, 1, 5, 1, 2, 5, 2, 1, 6, 3, 1, 0, 0, 2, 0})
	f.Add("fd00::/126", []byte{0, 0, 0, 0, 1, 0, 1, 2, 7, 2, 3, 4, 3, 0, 0, 0, 5, 0})
	f.Add("192.168.0.5", []byte{0, 0, 0, 0, 1, 0, 3, 0, 0, 0, 1, 0})
	f.Fuzz(func(t *testing.T, specs string, ops []byte) {
		al, err := Parse(strings.Split(specs, ","))
		if err != nil || len(al.ranges) == 0 {
			return
		}
		for _, r := range al.ranges {
			if r.First.Is4() != r.Last.Is4() || r.Last.Less(r.First) {
				t.Fatalf("Parse(%q) made the range %s", specs, r)
			}
		}
		if al.Size().Cmp(big.NewInt(1<<12)) > 0 {
			return // the scans below stay short
		}
		base := al.ranges[0].First
		addr := func(i byte) netip.Addr { // near the pool, sometimes outside it
			a := base
			for range int(i) % 12 {
				a = a.Next()
			}
			if i&0x80 != 0 {
				a = a.Prev()
			}
			return a
		}
		const owners = 6
		held := map[string]netip.Addr{}
		for i := 0; i+2 < len(ops) && i < 3*256; i += 3 {
			op, owner, a := ops[i]%4, fmt.Sprintf("o%d", ops[i+1]%owners), addr(ops[i+2])
			before := map[string]netip.Addr{}
			for o, x := range held {
				before[o] = x
			}
			switch op {
			case 0:
				got, err := al.Allocate(owner, netip.Addr{})
				if err == nil {
					if !al.Contains(got) {
						t.Fatalf("Allocate(%s) = %s, outside the pool", owner, got)
					}
					held[owner] = got
				} else if !errors.Is(err, ErrExhausted) {
					t.Fatalf("Allocate(%s): %v", owner, err)
				}
			case 1:
				got, err := al.Allocate(owner, a)
				if err == nil {
					// An invalid address (below the start of the address space) asks for none.
					if a.IsValid() && got != a.Unmap() || !al.Contains(got) {
						t.Fatalf("Allocate(%s, %s) = %s", owner, a, got)
					}
					held[owner] = got
				}
			case 2:
				if al.Reserve(owner, a) == nil {
					held[owner] = a.Unmap()
				}
			case 3:
				al.Release(owner)
				delete(held, owner)
			}
			// Nobody else's address moved.
			for o, x := range before {
				if o != owner && held[o] != x {
					t.Fatalf("op %d on %s changed %s's address", op, owner, o)
				}
			}
			// The allocator agrees with what was handed out, one owner per address.
			seen := map[netip.Addr]string{}
			for n := range owners {
				o := fmt.Sprintf("o%d", n)
				x, ok := al.Lookup(o)
				if want, has := held[o]; ok != has || (ok && x != want) {
					t.Fatalf("Lookup(%s) = %s %v, want %s %v", o, x, ok, want, has)
				}
				if !ok {
					continue
				}
				if !al.Contains(x) {
					t.Fatalf("%s holds %s, outside the pool", o, x)
				}
				if other, dup := seen[x]; dup {
					t.Fatalf("%s is held by %s and %s", x, other, o)
				}
				seen[x] = o
				if back, _ := al.Owner(x); back != o {
					t.Fatalf("Owner(%s) = %s, want %s", x, back, o)
				}
			}
			if al.Allocated() != len(seen) {
				t.Fatalf("Allocated() = %d, %d owners hold an address", al.Allocated(), len(seen))
			}
		}
	})
}
