package l7

import (
	"bytes"
	"cmp"
	"fmt"
	"hash/maphash"
	"maps"
	"slices"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/fleetlb/fleetlb/internal/proxy/pbcheck"
)

// A route configuration arrives whole even when one of its virtual hosts
// changed (fleetlb's HTTP listener has one with every virtual host of the
// fleet). Compiled from its encoding, it costs what changed: the top-level
// fields are split without decoding, each virtual host is known by the digest
// of its encoding, and only those not compiled before are decoded, checked
// and compiled; the domain index is the previous one with the removed and
// added hosts' domains applied. The result is the RouteTable CompileRouteConfig
// builds from the decoded configuration, and the same error when there is one
// (an update that fails is compiled again in full for its message).

// rcVirtualHostsField is RouteConfiguration.virtual_hosts.
const rcVirtualHostsField = 2

// vhostKey identifies a virtual host's encoding: two 64-bit hashes of it
// under independent random seeds of this process. Two different encodings
// would have to collide under both for a changed host to be taken for one
// compiled before; the seeds never leave the process, so a tenant cannot aim
// for that, and by chance it is 2⁻¹²⁸ per pair. It costs a quarter of a
// SHA-256, which at ten thousand hosts is milliseconds per update.
type vhostKey [2]uint64

var vhostSeeds = [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}

func keyOf(b []byte) vhostKey {
	return vhostKey{maphash.Bytes(vhostSeeds[0], b), maphash.Bytes(vhostSeeds[1], b)}
}

// compiledVHost is one virtual host of a route configuration as compiled.
type compiledVHost struct {
	vh      *virtualHost
	domains []string // lower-cased, in their order
	pos     int32    // in its configuration's order
	wild    bool     // a domain with "*": the wildcard lists depend on the hosts' order
}

// routeState is what the Set keeps of a route configuration received encoded,
// to compile the next one from it.
type routeState struct {
	table   *RouteTable
	head    []byte                      // the fields other than virtual_hosts, as encoded
	vhosts  map[vhostKey]*compiledVHost // each host by its key
	order   []*compiledVHost            // in the configuration's order
	keys    []vhostKey                  // of order, side by side: compared without visiting each host
	retries retryPolicies               // shared compiled retry policies
}

// maxSharedRetryPolicies bounds what a route configuration keeps of retry
// policies no virtual host may use any more: past it, sharing starts over.
const maxSharedRetryPolicies = 1024

// pendingRoute is a compiled route configuration not yet installed.
type pendingRoute struct {
	state            *routeState
	removed, added   []*compiledVHost
	removedKeys      []vhostKey // of removed, side by side
	addedKeys        []vhostKey
	shifted          bool        // hosts kept moved in the order
	fullCompileTable *RouteTable // set when the incremental path was not taken
}

// commit makes p's state current: the map of hosts (shared with the
// previous state, which is dropped) follows what came and went.
func (p *pendingRoute) commit() {
	st := p.state
	for _, k := range p.removedKeys {
		delete(st.vhosts, k)
	}
	for i, c := range p.added {
		st.vhosts[p.addedKeys[i]] = c
	}
	if p.shifted {
		for i, c := range st.order {
			c.pos = int32(i)
		}
	}
}

// compileEncoded compiles the route configuration named name from its
// encoding b over prev (nil: none kept); prev is not changed.
func compileEncoded(name string, b []byte, prev *routeState) (*pendingRoute, error) {
	p, err := compileIncremental(b, prev)
	if err != nil {
		// The message (and, were the two ever to disagree, the outcome)
		// is the full compilation's.
		var rc routev3.RouteConfiguration
		if derr := proto.Unmarshal(b, &rc); derr != nil {
			return nil, fmt.Errorf("resource %q: %w", name, derr)
		}
		rt, ferr := CompileRouteConfig(&rc)
		if ferr != nil {
			return nil, ferr
		}
		p = &pendingRoute{fullCompileTable: rt}
	}
	table := p.fullCompileTable
	if table == nil {
		table = p.state.table
	}
	if table.name != name {
		return nil, fmt.Errorf("resource %q: the route_configuration's name is %q", name, table.name)
	}
	return p, nil
}

// splitRouteConfig returns the encoding of a route configuration's fields
// other than virtual_hosts, and each virtual host's encoding (about hint of
// them).
func splitRouteConfig(b []byte, hint int) (head []byte, vhosts [][]byte, err error) {
	vhosts = make([][]byte, 0, hint)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil, protowire.ParseError(n)
		}
		if num == rcVirtualHostsField && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b[n:])
			if m < 0 {
				return nil, nil, protowire.ParseError(m)
			}
			vhosts = append(vhosts, v)
			b = b[n+m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, nil, protowire.ParseError(m)
		}
		head = append(head, b[:n+m]...)
		b = b[n+m:]
	}
	return head, vhosts, nil
}

func compileIncremental(b []byte, prev *routeState) (*pendingRoute, error) {
	if prev == nil {
		prev = &routeState{vhosts: map[vhostKey]*compiledVHost{}, retries: retryPolicies{}, table: &RouteTable{}}
	}
	head, encoded, err := splitRouteConfig(b, len(prev.order)+8)
	if err != nil {
		return nil, err
	}
	st := &routeState{head: bytes.Clone(head), vhosts: prev.vhosts, retries: prev.retries}
	if len(st.retries) > maxSharedRetryPolicies {
		st.retries = retryPolicies{}
	}
	rt := &RouteTable{name: prev.table.name, headers: prev.table.headers}
	if prev.head == nil || !bytes.Equal(head, prev.head) {
		var rc routev3.RouteConfiguration
		if err := proto.Unmarshal(head, &rc); err != nil {
			return nil, err
		}
		where := fmt.Sprintf("route_configuration %q", rc.GetName())
		if err := pbcheck.Unsupported(where, &rc, "name",
			"request_headers_to_add", "request_headers_to_remove", "response_headers_to_add", "response_headers_to_remove"); err != nil {
			return nil, err
		}
		rt.name = rc.GetName()
		if rt.headers, err = compileHeaderOps(where, rc.GetRequestHeadersToAdd(), rc.GetRequestHeadersToRemove(),
			rc.GetResponseHeadersToAdd(), rc.GetResponseHeadersToRemove()); err != nil {
			return nil, err
		}
	}
	where := fmt.Sprintf("route_configuration %q", rt.name)

	// Each host is looked for where the previous order had it (after one
	// inserted, removed or replaced, that is still where the rest are), and
	// by key when not there; only those not found are decoded and compiled.
	p := &pendingRoute{state: st}
	st.order = make([]*compiledVHost, 0, len(encoded))
	st.keys = make([]vhostKey, 0, len(encoded))
	n := len(prev.order)
	used := make([]bool, n) // prev positions taken
	found, j := 0, 0
	reordered, wildChanged := false, n == 0
	for i, vb := range encoded {
		key := keyOf(vb)
		at := -1
		switch {
		case j < n && prev.keys[j] == key:
			at, j = j, j+1
		case j+1 < n && prev.keys[j+1] == key:
			at, j = j+1, j+2
		default:
			if c := prev.vhosts[key]; c != nil {
				at, reordered = int(c.pos), true
			}
		}
		if at >= 0 {
			if used[at] {
				return nil, fmt.Errorf("%s: virtual_hosts[%d] repeats another", where, i)
			}
			used[at] = true
			found++
			p.shifted = p.shifted || at != i
			st.order = append(st.order, prev.order[at])
			st.keys = append(st.keys, key)
			continue
		}
		var v routev3.VirtualHost
		if err := proto.Unmarshal(vb, &v); err != nil {
			return nil, err
		}
		vw := fmt.Sprintf("%s: virtual_hosts[%d] %q", where, i, v.GetName())
		vh, err := compileVirtualHost(vw, &v, st.retries)
		if err != nil {
			return nil, err
		}
		if len(v.GetDomains()) == 0 {
			return nil, fmt.Errorf("%s: domains is empty", vw)
		}
		c := &compiledVHost{vh: vh, pos: int32(i), domains: make([]string, 0, len(v.GetDomains()))}
		for _, d := range v.GetDomains() {
			d = strings.ToLower(d)
			kind, err := domainKind(vw, d)
			if err != nil {
				return nil, err
			}
			c.wild = c.wild || kind != domainExact
			c.domains = append(c.domains, d)
		}
		wildChanged = wildChanged || c.wild
		p.added, p.addedKeys = append(p.added, c), append(p.addedKeys, key)
		st.order = append(st.order, c)
		st.keys = append(st.keys, key)
	}
	if found < n {
		for at, ok := range used {
			if !ok {
				c := prev.order[at]
				p.removed, p.removedKeys = append(p.removed, c), append(p.removedKeys, prev.keys[at])
				wildChanged = wildChanged || c.wild
			}
		}
	}

	// Exact domains: the previous index (which requests may be reading) is
	// shared, with the removed hosts' domains and the added ones' in a copy
	// of its overlay; past a sixteenth of the index, the overlay is folded
	// into a copy of it, so an update costs what changed (amortized).
	rt.exact, rt.exactChanged = prev.table.exact, maps.Clone(prev.table.exactChanged)
	if rt.exact == nil {
		rt.exact = map[string]*virtualHost{}
	}
	if rt.exactChanged == nil {
		rt.exactChanged = map[string]*virtualHost{}
	}
	for _, c := range p.removed {
		for _, d := range c.domains {
			if strings.Contains(d, "*") {
				continue
			}
			if _, ok := rt.exact[d]; ok {
				rt.exactChanged[d] = nil
			} else {
				delete(rt.exactChanged, d)
			}
		}
	}
	for _, c := range p.added {
		for _, d := range c.domains {
			if strings.Contains(d, "*") {
				continue
			}
			if rt.exactHost(d) != nil {
				return nil, fmt.Errorf("%s: domain %q is used twice", where, d)
			}
			rt.exactChanged[d] = c.vh
		}
	}
	if len(rt.exactChanged) > max(8, len(rt.exact)/16) {
		exact := make(map[string]*virtualHost, len(rt.exact)+len(rt.exactChanged))
		maps.Copy(exact, rt.exact)
		for d, vh := range rt.exactChanged {
			if vh == nil {
				delete(exact, d)
			} else {
				exact[d] = vh
			}
		}
		rt.exact, rt.exactChanged = exact, nil
	} else if len(rt.exactChanged) == 0 {
		rt.exactChanged = nil
	}
	// Wildcards match by length, then by order: their lists are rebuilt when
	// a host with one came or went, or hosts moved.
	if !wildChanged && !reordered {
		rt.suffix, rt.prefix, rt.any = prev.table.suffix, prev.table.prefix, prev.table.any
	} else {
		seen := map[string]bool{}
		for _, c := range st.order {
			if !c.wild {
				continue
			}
			for _, d := range c.domains {
				kind, _ := domainKind("", d)
				if kind == domainExact {
					continue
				}
				if seen[d] {
					return nil, fmt.Errorf("%s: domain %q is used twice", where, d)
				}
				seen[d] = true
				switch kind {
				case domainAny:
					rt.any = c.vh
				case domainSuffix:
					rt.suffix = append(rt.suffix, wildcardHost{d[1:], c.vh})
				case domainPrefix:
					rt.prefix = append(rt.prefix, wildcardHost{d[:len(d)-1], c.vh})
				}
			}
		}
		longestFirst := func(a, b wildcardHost) int { return cmp.Compare(len(b.part), len(a.part)) }
		slices.SortStableFunc(rt.suffix, longestFirst)
		slices.SortStableFunc(rt.prefix, longestFirst)
	}
	st.table = rt
	return p, nil
}

// Kinds of a virtual host's domain.
const (
	domainExact = iota
	domainAny
	domainSuffix // "*.example.com"
	domainPrefix // "www.*"
)

// domainKind classifies a lower-cased domain as Envoy does.
func domainKind(where, d string) (int, error) {
	switch {
	case d == "*":
		return domainAny, nil
	case strings.HasPrefix(d, "*"):
		return domainSuffix, nil
	case strings.HasSuffix(d, "*"):
		return domainPrefix, nil
	case strings.Contains(d, "*"):
		return 0, fmt.Errorf("%s: domain %q: a wildcard must be the first or last character", where, d)
	}
	return domainExact, nil
}
