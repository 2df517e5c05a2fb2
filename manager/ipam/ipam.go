// Package ipam hands out virtual IPs from address pools.
//
// One Allocator covers the whole address space of the management cluster:
// every address has at most one holder, whichever AddressPool it is taken
// from, so two pools that overlap can never give one address to two owners.
// A Pool only says which addresses an allocation may come from.
//
// The Allocator keeps no state that is not also written to the API: the
// controller rebuilds it from the addresses recorded in LoadBalancer and
// ProxyFleet status (Reserve) and from the persisted quarantine (Restore)
// before it makes any new allocation, so an address is stable across manager
// restarts and never has two owners.
//
// A released address waits a quarantine before another tenant group may take
// it (DNS records and clients of the old owner may still point at it); the
// group that released it may take it back at once.
package ipam

import (
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"sort"
	"strings"
	"time"
)

// Range is an inclusive span of addresses of one family.
type Range struct {
	First, Last netip.Addr
	// Prefix is set when the range was written as a CIDR. Its network address
	// (IPv4 and IPv6: the first address) and, for IPv4, its broadcast address
	// are never handed out, unless the prefix is a /31, /32, /127 or /128.
	Prefix netip.Prefix
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
		return Range{First: p.Addr(), Last: lastOf(p), Prefix: p}, nil
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

// Contains reports whether a lies in the range (reserved addresses included).
func (r Range) Contains(a netip.Addr) bool {
	a = a.Unmap()
	return a.Is4() == r.First.Is4() && !a.Less(r.First) && !r.Last.Less(a)
}

// Overlaps reports whether the two ranges share an address.
func (r Range) Overlaps(o Range) bool {
	return r.First.Is4() == o.First.Is4() && !r.Last.Less(o.First) && !o.Last.Less(r.First)
}

// usable is the span of addresses the range hands out; ok is false when there is none.
func (r Range) usable() (first, last netip.Addr, ok bool) {
	first, last = r.First, r.Last
	if !r.Prefix.IsValid() {
		return first, last, true
	}
	hostBits := r.Prefix.Addr().BitLen() - r.Prefix.Bits()
	if hostBits <= 1 {
		return first, last, true // point-to-point and single-address prefixes: all usable
	}
	first = first.Next()
	if r.First.Is4() {
		last = last.Prev()
	}
	return first, last, true
}

// reservedWhy says why a, inside the range, is never handed out ("" when it may be).
func (r Range) reservedWhy(a netip.Addr) string {
	first, last, _ := r.usable()
	switch {
	case a.Less(first):
		return fmt.Sprintf("the network address of %s", r.Prefix)
	case last.Less(a):
		return fmt.Sprintf("the broadcast address of %s", r.Prefix)
	}
	return ""
}

// Size is the number of addresses the range hands out (large IPv6 ranges do not fit an int64).
func (r Range) Size() *big.Int {
	first, last, _ := r.usable()
	n := new(big.Int).Sub(new(big.Int).SetBytes(last.AsSlice()), new(big.Int).SetBytes(first.AsSlice()))
	return n.Add(n, big.NewInt(1))
}

func (r Range) String() string {
	if r.Prefix.IsValid() {
		return r.Prefix.String()
	}
	if r.First == r.Last {
		return r.First.String()
	}
	return r.First.String() + "-" + r.Last.String()
}

// Pool is the set of ranges one AddressPool hands out addresses from.
type Pool struct {
	ranges []Range
}

// NewPool returns a pool over the given ranges, which must not overlap.
func NewPool(ranges []Range) (*Pool, error) {
	rs := append([]Range(nil), ranges...)
	sort.Slice(rs, func(i, j int) bool { return rs[i].First.Less(rs[j].First) })
	for i := 1; i < len(rs); i++ {
		if rs[i].Overlaps(rs[i-1]) {
			return nil, fmt.Errorf("ranges %s and %s overlap", rs[i-1], rs[i])
		}
	}
	return &Pool{ranges: rs}, nil
}

// ParsePool builds a pool from the textual forms ParseRange accepts.
func ParsePool(specs []string) (*Pool, error) {
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
	return NewPool(ranges)
}

// Ranges are the pool's ranges, lowest first.
func (p *Pool) Ranges() []Range { return p.ranges }

// Contains reports whether a is in one of the pool's ranges, reserved
// addresses (network, broadcast) included.
func (p *Pool) Contains(a netip.Addr) bool { return p.rangeOf(a) >= 0 }

func (p *Pool) rangeOf(a netip.Addr) int {
	a = a.Unmap()
	for i, r := range p.ranges {
		if r.Contains(a) {
			return i
		}
	}
	return -1
}

// Allocatable reports whether the pool may hand out a.
func (p *Pool) Allocatable(a netip.Addr) bool {
	i := p.rangeOf(a)
	return i >= 0 && p.ranges[i].reservedWhy(a.Unmap()) == ""
}

// Overlaps returns a range of p and one of q that share addresses.
func (p *Pool) Overlaps(q *Pool) (Range, Range, bool) {
	for _, x := range p.ranges {
		for _, y := range q.ranges {
			if x.Overlaps(y) {
				return x, y, true
			}
		}
	}
	return Range{}, Range{}, false
}

// Size is the number of addresses the pool hands out.
func (p *Pool) Size() *big.Int {
	n := new(big.Int)
	for _, r := range p.ranges {
		n.Add(n, r.Size())
	}
	return n
}

// Errors callers turn into condition reasons.
var (
	ErrExhausted = errors.New("address pool exhausted")
	ErrNotInPool = errors.New("address is not in the pool")
	// ErrReserved: the address is in the pool but never handed out (a CIDR's
	// network or broadcast address).
	ErrReserved = errors.New("address is reserved")
)

// InUseError says a requested address already belongs to someone else.
// Owner and Group are for the caller to decide what it may tell whom.
type InUseError struct {
	Addr         netip.Addr
	Owner, Group string
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("address %s is already allocated to %s", e.Addr, e.Owner)
}

// QuarantinedError says a requested address was released by another group
// and may be taken only after Until.
type QuarantinedError struct {
	Addr  netip.Addr
	Until time.Time
}

func (e *QuarantinedError) Error() string {
	return fmt.Sprintf("address %s was released recently and is quarantined until %s", e.Addr, e.Until.UTC().Format(time.RFC3339))
}

// Released is an address in quarantine: Group released it, others may take it from Until.
type Released struct {
	Addr  netip.Addr
	Group string
	Until time.Time
}

type holding struct{ owner, group string }

// Allocator tracks which owner holds which address, across all pools.
// Owners are opaque keys such as "tenant-a/web"; one owner holds at most one
// address. Groups are opaque keys of the tenant groups owners belong to.
// It is not safe for concurrent use: one controller owns it.
type Allocator struct {
	// Quarantine is how long a released address is kept from other groups.
	Quarantine time.Duration

	byAddr   map[netip.Addr]holding
	byOwner  map[string]netip.Addr
	released map[netip.Addr]Released
	// hints, per pool: no address of the pool below it is free for everyone
	// (invalid means "from the start"), so a run of allocations scans the
	// pool once instead of once each.
	hints map[*Pool]netip.Addr
}

// NewAllocator returns an empty allocator with the given quarantine.
func NewAllocator(quarantine time.Duration) *Allocator {
	return &Allocator{
		Quarantine: quarantine,
		byAddr:     map[netip.Addr]holding{}, byOwner: map[string]netip.Addr{},
		released: map[netip.Addr]Released{}, hints: map[*Pool]netip.Addr{},
	}
}

// Forget drops what the allocator remembers about a pool that was replaced.
func (al *Allocator) Forget(p *Pool) { delete(al.hints, p) }

// Reserve records that owner (of group) holds a, as read back from status.
// Reserving the address an owner already holds is a no-op; an owner moving to
// a new address gives up its old one (without quarantine: this is a rebuild).
func (al *Allocator) Reserve(owner, group string, a netip.Addr) error {
	a = a.Unmap()
	if cur, ok := al.byAddr[a]; ok {
		if cur.owner == owner {
			return nil
		}
		return &InUseError{Addr: a, Owner: cur.owner, Group: cur.group}
	}
	if old, ok := al.byOwner[owner]; ok {
		delete(al.byAddr, old)
		al.freed(old)
	}
	delete(al.released, a)
	al.byAddr[a] = holding{owner: owner, group: group}
	al.byOwner[owner] = a
	return nil
}

// Restore puts a back into quarantine for group until until, as read back
// from where the controller persisted it. Held or expired addresses are ignored.
func (al *Allocator) Restore(a netip.Addr, group string, until, now time.Time) {
	a = a.Unmap()
	if _, held := al.byAddr[a]; held || !now.Before(until) {
		return
	}
	if cur, ok := al.released[a]; ok && !cur.Until.Before(until) {
		return
	}
	al.released[a] = Released{Addr: a, Group: group, Until: until}
}

// Allocate gives owner (of group) an address of pool p: the one it already
// holds there, else the requested one (when valid), else the lowest address
// free for its group. A requested address that differs from the one already
// held moves the owner; the old one goes into quarantine.
func (al *Allocator) Allocate(p *Pool, owner, group string, requested netip.Addr, now time.Time) (netip.Addr, error) {
	al.expire(now)
	if requested.IsValid() {
		requested = requested.Unmap()
		i := p.rangeOf(requested)
		if i < 0 {
			return netip.Addr{}, fmt.Errorf("%w: %s", ErrNotInPool, requested)
		}
		if why := p.ranges[i].reservedWhy(requested); why != "" {
			return netip.Addr{}, fmt.Errorf("%w: %s is %s", ErrReserved, requested, why)
		}
		if cur, ok := al.byAddr[requested]; ok {
			if cur.owner == owner {
				return requested, nil
			}
			return netip.Addr{}, &InUseError{Addr: requested, Owner: cur.owner, Group: cur.group}
		}
		if q, ok := al.released[requested]; ok && q.Group != group {
			return netip.Addr{}, &QuarantinedError{Addr: requested, Until: q.Until}
		}
		al.Release(owner, now)
		al.take(owner, group, requested)
		return requested, nil
	}
	if cur, ok := al.byOwner[owner]; ok {
		if p.Allocatable(cur) {
			return cur, nil
		}
		al.Release(owner, now) // the pool no longer has it
	}
	// The lowest address this group released itself, and the lowest free one.
	var own netip.Addr
	for a, q := range al.released {
		if q.Group == group && p.Allocatable(a) && (!own.IsValid() || a.Less(own)) {
			own = a
		}
	}
	free := al.scan(p)
	switch {
	case own.IsValid() && (!free.IsValid() || own.Less(free)):
		al.take(owner, group, own)
		return own, nil
	case free.IsValid():
		al.take(owner, group, free)
		al.hints[p] = free
		return free, nil
	}
	return netip.Addr{}, ErrExhausted
}

// scan returns the lowest address of p that nobody holds and nobody released
// recently, starting at the pool's hint.
func (al *Allocator) scan(p *Pool) netip.Addr {
	hint, hinted := al.hints[p]
	for _, r := range p.ranges {
		first, last, ok := r.usable()
		if !ok || last.Less(first) {
			continue
		}
		start := first
		if hinted && hint.IsValid() && hint.Is4() == first.Is4() {
			if last.Less(hint) {
				continue
			}
			if start.Less(hint) {
				start = hint
			}
		}
		for a := start; ; a = a.Next() {
			_, taken := al.byAddr[a]
			_, quarantined := al.released[a]
			if !taken && !quarantined {
				return a
			}
			if a == last {
				break
			}
		}
	}
	return netip.Addr{}
}

func (al *Allocator) take(owner, group string, a netip.Addr) {
	delete(al.released, a)
	al.byAddr[a] = holding{owner: owner, group: group}
	al.byOwner[owner] = a
}

// expire ends quarantines that are over.
func (al *Allocator) expire(now time.Time) {
	for a, q := range al.released {
		if !now.Before(q.Until) {
			delete(al.released, a)
			al.freed(a)
		}
	}
}

// freed lowers the hints of the pools that contain a, which is free again.
func (al *Allocator) freed(a netip.Addr) {
	for p, h := range al.hints {
		if h.IsValid() && a.Less(h) && p.Contains(a) {
			al.hints[p] = a
		}
	}
}

// Release frees whatever owner holds; the address goes into quarantine for
// everyone but the owner's group. It returns the address that was held.
func (al *Allocator) Release(owner string, now time.Time) (netip.Addr, bool) {
	a, ok := al.byOwner[owner]
	if !ok {
		return netip.Addr{}, false
	}
	h := al.byAddr[a]
	delete(al.byOwner, owner)
	delete(al.byAddr, a)
	if al.Quarantine > 0 {
		al.released[a] = Released{Addr: a, Group: h.group, Until: now.Add(al.Quarantine)}
	} else {
		al.freed(a)
	}
	return a, true
}

// Owner returns who holds a, and its group, if anyone.
func (al *Allocator) Owner(a netip.Addr) (owner, group string, ok bool) {
	h, ok := al.byAddr[a.Unmap()]
	return h.owner, h.group, ok
}

// Lookup returns the address owner holds, if any.
func (al *Allocator) Lookup(owner string) (netip.Addr, bool) {
	a, ok := al.byOwner[owner]
	return a, ok
}

// Allocated is the number of addresses held, in all pools.
func (al *Allocator) Allocated() int { return len(al.byAddr) }

// Quarantined lists the addresses of p still in quarantine at now, lowest first.
func (al *Allocator) Quarantined(p *Pool, now time.Time) []Released {
	var out []Released
	for a, q := range al.released {
		if now.Before(q.Until) && p.Contains(a) {
			out = append(out, q)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr.Less(out[j].Addr) })
	return out
}

// NextRelease is when the first address of p that group is waiting for
// leaves quarantine; false when there is none.
func (al *Allocator) NextRelease(p *Pool, group string, now time.Time) (time.Time, bool) {
	var next time.Time
	for a, q := range al.released {
		if q.Group != group && now.Before(q.Until) && p.Allocatable(a) && (next.IsZero() || q.Until.Before(next)) {
			next = q.Until
		}
	}
	return next, !next.IsZero()
}
