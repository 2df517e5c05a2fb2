// Package backends confines where the fleet sends a tenant's traffic. A
// tenant writes its own TenantNodes, so without this it could aim its VIP at
// 127.0.0.1, 169.254.169.254, the proxy's admin port, another tenant's nodes
// or a management Service (the class of Contour's CVE-2021-32783). A node
// address is served only when it lies in one of its Tenant's nodeCIDRs and
// outside the deny-list: the manager's static prefixes (loopback, link-local,
// unspecified, multicast by default), every AddressPool range and every
// ProxyFleet's own addresses. Node ports must lie in the Tenant's
// nodePortRange.
package backends

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/manager/ipam"
)

// DefaultDeny is the static deny-list when the manager is given none:
// addresses that reach the proxy host itself or no single host.
var DefaultDeny = MustParsePrefixes(
	"127.0.0.0/8", "::1/128", // loopback: the proxy's own admin and sidecars
	"169.254.0.0/16", "fe80::/10", // link-local: cloud metadata (169.254.169.254)
	"0.0.0.0/8", "::/128", // unspecified ("this host")
	"224.0.0.0/4", "ff00::/8", "255.255.255.255/32", // multicast and broadcast
)

// ParsePrefixes reads a comma-separated list of CIDRs (a flag value); a bare
// address is taken as a single-address prefix.
func ParsePrefixes(list ...string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, item := range list {
		for s := range strings.SplitSeq(item, ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			if !strings.Contains(s, "/") {
				a, err := netip.ParseAddr(s)
				if err != nil {
					return nil, fmt.Errorf("%q is neither a CIDR nor an address: %w", s, err)
				}
				out = append(out, netip.PrefixFrom(a, a.BitLen()))
				continue
			}
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, err
			}
			out = append(out, p.Masked())
		}
	}
	return out, nil
}

// FormatPrefixes is the flag form of prefixes (ParsePrefixes reads it back).
func FormatPrefixes(ps []netip.Prefix) string { return joinPrefixes(ps, ",") }

// MustParsePrefixes is ParsePrefixes for constants.
func MustParsePrefixes(list ...string) []netip.Prefix {
	p, err := ParsePrefixes(list...)
	if err != nil {
		panic(err)
	}
	return p
}

// DenyList is every address range no tenant node address may be in.
type DenyList struct {
	rules []rule
}

type rule struct {
	rng    ipam.Range
	reason string // v1.Refused*
	what   string // the denied range, for messages
}

// unmapped is a range with IPv4-mapped ends read as IPv4, so that
// ::ffff:127.0.0.0/104 denies 127.0.0.1 too.
func unmapped(r ipam.Range) ipam.Range {
	if r.First.Is4In6() && r.Last.Is4In6() {
		return ipam.Range{First: r.First.Unmap(), Last: r.Last.Unmap()}
	}
	return r
}

// NewDenyList is the static prefixes (nil means DefaultDeny) plus every
// range of the pools and every address of the fleets. Unparsable pool ranges
// are skipped: admission refuses to allocate from them.
func NewDenyList(static []netip.Prefix, pools []v1.AddressPool, fleets []v1.ProxyFleet) DenyList {
	if static == nil {
		static = DefaultDeny
	}
	var d DenyList
	for _, p := range static {
		if r, err := ipam.ParseRange(p.Masked().String()); err == nil {
			d.rules = append(d.rules, rule{rng: unmapped(r), reason: v1.RefusedDenied, what: p.Masked().String()})
		}
	}
	// Fleets before pools: a fleet VIP usually lies in a pool, and "a fleet
	// address" is the more precise reason.
	for i := range fleets {
		f := &fleets[i]
		addrs := []v1.IPAddress{f.Spec.VIP}
		for _, a := range f.Status.Addresses {
			addrs = append(addrs, a.IP)
		}
		for _, a := range addrs {
			if ip, err := netip.ParseAddr(string(a)); err == nil {
				ip = ip.Unmap()
				d.rules = append(d.rules, rule{rng: ipam.Range{First: ip, Last: ip}, reason: v1.RefusedFleetAddress, what: ip.String()})
			}
		}
	}
	for i := range pools {
		for _, s := range pools[i].Spec.Addresses {
			if r, err := ipam.ParseRange(string(s)); err == nil {
				d.rules = append(d.rules, rule{rng: unmapped(r), reason: v1.RefusedAddressPool, what: r.String()})
			}
		}
	}
	return d
}

// Load reads the pools and fleets and builds the deny-list.
func Load(ctx context.Context, c client.Reader, static []netip.Prefix) (DenyList, error) {
	// Read only (NewDenyList keeps parsed ranges, not the objects): no
	// copies. The snapshot builder loads this on every reconcile.
	var pools v1.AddressPoolList
	if err := c.List(ctx, &pools, client.UnsafeDisableDeepCopy); err != nil {
		return DenyList{}, err
	}
	var fleets v1.ProxyFleetList
	if err := c.List(ctx, &fleets, client.UnsafeDisableDeepCopy); err != nil {
		return DenyList{}, err
	}
	return NewDenyList(static, pools.Items, fleets.Items), nil
}

// Confine splits a tenant's nodes into what may be served and what is
// refused. allowed is a copy of nodes holding only served addresses (written
// unmapped: ::ffff:10.0.0.1 is served as 10.0.0.1), without nodes left with
// none; refused lists every other address with its reason. Messages name only
// the tenant's own data and the manager's configuration, never another tenant.
func Confine(t *v1.Tenant, nodes *v1.TenantNodes, deny DenyList) (allowed *v1.TenantNodes, refused []v1.RefusedAddress) {
	allowed = &v1.TenantNodes{}
	if nodes == nil {
		return allowed, nil
	}
	allowed.ObjectMeta = *nodes.ObjectMeta.DeepCopy()
	allowed.Spec.Cluster = nodes.Spec.Cluster
	cidrs := nodeCIDRs(t)
	for _, n := range nodes.Spec.Nodes {
		keep := v1.TenantNode{Name: n.Name, Zone: n.Zone}
		for _, addr := range n.Addresses {
			ip, reason, msg := check(string(addr), cidrs, deny)
			if reason != "" {
				refused = append(refused, v1.RefusedAddress{Node: n.Name, Address: string(addr), Reason: reason, Message: msg})
				continue
			}
			keep.Addresses = append(keep.Addresses, v1.IPAddress(ip.String()))
		}
		if len(keep.Addresses) > 0 {
			allowed.Spec.Nodes = append(allowed.Spec.Nodes, keep)
		}
	}
	return allowed, refused
}

func nodeCIDRs(t *v1.Tenant) []netip.Prefix {
	var out []netip.Prefix
	for _, c := range t.Spec.NodeCIDRs {
		if p, err := ParsePrefixes(string(c)); err == nil {
			out = append(out, p...)
		}
	}
	return out
}

// check says why one address may not be served ("" when it may).
func check(s string, cidrs []netip.Prefix, deny DenyList) (netip.Addr, string, string) {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return ip, v1.RefusedInvalid, fmt.Sprintf("%s is not an IP address", s)
	}
	if ip.Zone() != "" {
		return ip, v1.RefusedInvalid, fmt.Sprintf("%s has an IPv6 zone; a node address must be routable from the proxies", s)
	}
	ip = ip.Unmap()
	for _, r := range deny.rules {
		if !r.rng.Contains(ip) {
			continue
		}
		switch r.reason {
		case v1.RefusedFleetAddress:
			return ip, r.reason, fmt.Sprintf("%s is an address of a proxy fleet", s)
		case v1.RefusedAddressPool:
			return ip, r.reason, fmt.Sprintf("%s is in an address pool (%s); load balancer addresses are never backends", s, r.what)
		}
		return ip, r.reason, fmt.Sprintf("%s is %s address in the manager's deny-list (%s)", s, kind(ip), r.what)
	}
	for _, p := range cidrs {
		if p.Contains(ip) || (ip.Is4() && p.Contains(netip.AddrFrom16(ip.As16()))) {
			return ip, "", ""
		}
	}
	if len(cidrs) == 0 {
		return ip, v1.RefusedOutsideNodeCIDRs, fmt.Sprintf("%s: the tenant has no nodeCIDRs, so no node address is allowed", s)
	}
	shown := joinPrefixes(cidrs[:min(len(cidrs), 4)], ", ")
	if len(cidrs) > 4 {
		shown += fmt.Sprintf(" and %d more", len(cidrs)-4)
	}
	return ip, v1.RefusedOutsideNodeCIDRs, fmt.Sprintf("%s is outside the tenant's nodeCIDRs (%s)", s, shown)
}

func kind(ip netip.Addr) string {
	switch {
	case ip.IsLoopback():
		return "a loopback"
	case ip.IsLinkLocalUnicast():
		return "a link-local"
	case ip.IsUnspecified():
		return "an unspecified"
	case ip.IsMulticast(), ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "a multicast or broadcast"
	}
	return "an"
}

func joinPrefixes(ps []netip.Prefix, sep string) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, sep)
}

// NodePortRange is the Tenant's node port range (Kubernetes' default when unset).
func NodePortRange(t *v1.Tenant) (lo, hi int32) {
	if r := t.Spec.NodePortRange; r != nil {
		return r.Min, r.Max
	}
	return v1.DefaultNodePortMin, v1.DefaultNodePortMax
}

// CheckNodePort says why a node port may not be used ("" when it may).
func CheckNodePort(t *v1.Tenant, port int32) string {
	if lo, hi := NodePortRange(t); port < lo || port > hi {
		return fmt.Sprintf("node port %d is outside the tenant's node port range %d-%d", port, lo, hi)
	}
	return ""
}

// Truncate cuts s to at most n bytes (an event's note may hold 1024), marking the cut.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("...")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// Summary is a one-line account of refused addresses for a condition or an
// event: how many, and the first few with their reasons.
func Summary(refused []v1.RefusedAddress, served int) string {
	if len(refused) == 0 {
		return fmt.Sprintf("all %d node addresses are served", served)
	}
	const shown = 5
	var b strings.Builder
	fmt.Fprintf(&b, "%d node address(es) not served (%d served): ", len(refused), served)
	for i, r := range refused {
		if i == shown {
			fmt.Fprintf(&b, "; and %d more (status.refused)", len(refused)-shown)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "node %s: %s", r.Node, r.Message)
	}
	return b.String()
}
