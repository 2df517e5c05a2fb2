// Package ipam hands out virtual IPs from address pools.
//
// An Allocator holds no state of its own that is not also written to the API:
// the controller rebuilds it from the addresses recorded in LoadBalancer and
// ProxyFleet status (Reserve) before it makes any new allocation (Allocate),
// so an address is stable across manager restarts and never has two owners.
package ipam

import (
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"sort"
	"strings"
)

// Range is an inclusive span of addresses of one family.
type Range struct {
	First, Last netip.Addr
}

// ParseRange reads "10.0.0.0/24", "10.0.0.5" or "10.0.0.10-10.0.0.20".
func ParseRange(s string) (Range, error) {
	s = strings.TrimSpace(s)
	if from, to, ok := strings.Cut(s, "-"); ok {
		first, err := netip.ParseAddr(strings.TrimSpace(from))
		if err != nil {
			return Range{}, fmt.Errorf("range %q: first address: %w", s, err)
		}
		last, err := netip.ParseAddr(strings.TrimSpace(to))
		if err != nil {
			return Range{}, fmt.Errorf("range %q: last address: %w", s, err)
		}
		// Unmapped first: "::ffff:10.0.0.1-ffff::1" would otherwise span two
		// families, and a scan from its first address would never reach its last.
		first, last = first.Unmap(), last.Unmap()
		if first.Is4() != last.Is4() {
			return Range{}, fmt.Errorf("range %q: both ends must be of one address family", s)
		}
		if last.Less(first) {
			return Range{}, fmt.Errorf("range %q: last address is before the first", s)
		}
		return Range{First: first, Last: last}, nil
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return Range{}, fmt.Errorf("cidr %q: %w", s, err)
		}
		p = p.Masked()
		return Range{First: p.Addr(), Last: lastOf(p)}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return Range{}, fmt.Errorf("address %q: %w", s, err)
	}
	return Range{First: a.Unmap(), Last: a.Unmap()}, nil
}

func lastOf(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	bits := p.Bits()
	for i := range b {
		hostBits := len(b)*8 - bits - (len(b)-1-i)*8
		switch {
		case hostBits >= 8:
			b[i] = 0xff
		case hostBits > 0:
			b[i] |= byte(1<<hostBits) - 1
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Contains reports whether a lies in the range.
func (r Range) Contains(a netip.Addr) bool {
	a = a.Unmap()
	return a.Is4() == r.First.Is4() && !a.Less(r.First) && !r.Last.Less(a)
}

// Size is the number of addresses in the range (large IPv6 ranges do not fit an int64).
func (r Range) Size() *big.Int {
	n := new(big.Int).Sub(new(big.Int).SetBytes(r.Last.AsSlice()), new(big.Int).SetBytes(r.First.AsSlice()))
	return n.Add(n, big.NewInt(1))
}

func (r Range) String() string {
	if r.First == r.Last {
		return r.First.String()
	}
	return r.First.String() + "-" + r.Last.String()
}

// Errors callers turn into condition reasons.
var (
	ErrExhausted = errors.New("address pool exhausted")
	ErrNotInPool = errors.New("address is not in the pool")
)

// InUseError says a requested address already belongs to someone else.
type InUseError struct {
	Addr  netip.Addr
	Owner string
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("address %s is already allocated to %s", e.Addr, e.Owner)
}

// Allocator tracks which owner holds which address of one pool. Owners are
// opaque keys such as "tenant-a/web"; one owner holds at most one address.
// It is not safe for concurrent use: one controller owns it.
type Allocator struct {
	ranges  []Range
	byAddr  map[netip.Addr]string
	byOwner map[string]netip.Addr
	// lowFree: no address below it is free (invalid means "from the start"),
	// so a run of allocations scans the pool once instead of once each.
	lowFree netip.Addr
}

// New returns an allocator over the given ranges, which must not overlap.
func New(ranges []Range) (*Allocator, error) {
	rs := append([]Range(nil), ranges...)
	sort.Slice(rs, func(i, j int) bool { return rs[i].First.Less(rs[j].First) })
	for i := 1; i < len(rs); i++ {
		if rs[i].First.Is4() == rs[i-1].First.Is4() && !rs[i-1].Last.Less(rs[i].First) {
			return nil, fmt.Errorf("ranges %s and %s overlap", rs[i-1], rs[i])
		}
	}
	return &Allocator{ranges: rs, byAddr: map[netip.Addr]string{}, byOwner: map[string]netip.Addr{}}, nil
}

// Parse builds an allocator from the textual forms ParseRange accepts.
func Parse(specs []string) (*Allocator, error) {
	ranges := make([]Range, 0, len(specs))
	var errs []error
	for _, s := range specs {
		r, err := ParseRange(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ranges = append(ranges, r)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return New(ranges)
}

// Contains reports whether a is in one of the pool's ranges.
func (al *Allocator) Contains(a netip.Addr) bool {
	for _, r := range al.ranges {
		if r.Contains(a) {
			return true
		}
	}
	return false
}

// Reserve records that owner holds a, as read back from status. Reserving the
// address an owner already holds is a no-op; an owner moving to a new address
// gives up its old one.
func (al *Allocator) Reserve(owner string, a netip.Addr) error {
	a = a.Unmap()
	if !al.Contains(a) {
		return fmt.Errorf("%w: %s", ErrNotInPool, a)
	}
	if cur, ok := al.byAddr[a]; ok {
		if cur == owner {
			return nil
		}
		return &InUseError{Addr: a, Owner: cur}
	}
	al.Release(owner)
	al.byAddr[a] = owner
	al.byOwner[owner] = a
	return nil
}

// Allocate gives owner an address: the one it already holds, else the
// requested one (when valid), else the lowest free address of the pool.
// A requested address that differs from the one already held moves the owner.
func (al *Allocator) Allocate(owner string, requested netip.Addr) (netip.Addr, error) {
	if requested.IsValid() {
		if err := al.Reserve(owner, requested); err != nil {
			return netip.Addr{}, err
		}
		return requested.Unmap(), nil
	}
	if cur, ok := al.byOwner[owner]; ok {
		return cur, nil
	}
	for _, r := range al.ranges {
		start := r.First
		if al.lowFree.IsValid() && al.lowFree.Is4() == r.First.Is4() {
			if r.Last.Less(al.lowFree) {
				continue
			}
			if start.Less(al.lowFree) {
				start = al.lowFree
			}
		}
		for a := start; ; a = a.Next() {
			if _, taken := al.byAddr[a]; !taken {
				al.byAddr[a] = owner
				al.byOwner[owner] = a
				al.lowFree = a
				return a, nil
			}
			if a == r.Last {
				break
			}
		}
	}
	return netip.Addr{}, ErrExhausted
}

// Release frees whatever owner holds.
func (al *Allocator) Release(owner string) {
	if a, ok := al.byOwner[owner]; ok {
		delete(al.byOwner, owner)
		delete(al.byAddr, a)
		if al.lowFree.IsValid() && a.Less(al.lowFree) {
			al.lowFree = a
		}
	}
}

// Owner returns who holds a, if anyone.
func (al *Allocator) Owner(a netip.Addr) (string, bool) {
	o, ok := al.byAddr[a.Unmap()]
	return o, ok
}

// Lookup returns the address owner holds, if any.
func (al *Allocator) Lookup(owner string) (netip.Addr, bool) {
	a, ok := al.byOwner[owner]
	return a, ok
}

// Allocated is the number of addresses handed out.
func (al *Allocator) Allocated() int { return len(al.byAddr) }

// Size is the number of addresses in the pool.
func (al *Allocator) Size() *big.Int {
	n := new(big.Int)
	for _, r := range al.ranges {
		n.Add(n, r.Size())
	}
	return n
}
