// Package l4 serves the TCP (tcp_proxy with the network RBAC filter) and UDP
// (udp_proxy) listeners of fleetlb-proxy. Validation accepts exactly the subset it
// implements; anything else is an error naming the field, which the proxy NACKs.
package l4

import (
	"fmt"
	xdsmatcherv3 "github.com/cncf/xds/go/xds/type/matcher/v3"
	networkinputsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/matching/common_inputs/network/v3"
	"net/netip"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	udpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/udp/udp_proxy/v3"
	"google.golang.org/protobuf/proto"

	"github.com/fleetlb/fleetlb/internal/proxy/pbcheck"
)

// Filter names as Envoy registers them.
const (
	TCPProxyFilter = "envoy.filters.network.tcp_proxy"
	RBACFilter     = "envoy.filters.network.rbac"
	UDPProxyFilter = "envoy.filters.udp_listener.udp_proxy"
)

// Envoy defaults: tcp_proxy idle_timeout 1h, udp_proxy idle_timeout 1m.
const (
	defaultTCPIdle = time.Hour
	defaultUDPIdle = time.Minute
)

// unsupported returns an error naming the first populated field of m outside allowed.
func unsupported(where string, m proto.Message, allowed ...string) error {
	return pbcheck.Unsupported(where, m, allowed...)
}

// IsUDPListener reports whether l is a UDP listener (socket address protocol UDP).
func IsUDPListener(l *listenerv3.Listener) bool {
	return l.GetAddress().GetSocketAddress().GetProtocol() == corev3.SocketAddress_UDP
}

// Address returns the host:port the listener binds, validated.
func Address(l *listenerv3.Listener) (netip.AddrPort, error) {
	sa := l.GetAddress().GetSocketAddress()
	if sa == nil {
		return netip.AddrPort{}, fmt.Errorf("listener %q: address.socket_address is required", l.GetName())
	}
	if err := unsupported(fmt.Sprintf("listener %q: address.socket_address", l.GetName()), sa, "address", "port_value", "protocol"); err != nil {
		return netip.AddrPort{}, err
	}
	ip, err := netip.ParseAddr(sa.GetAddress())
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("listener %q: address.socket_address.address %q is not an IP", l.GetName(), sa.GetAddress())
	}
	return netip.AddrPortFrom(ip, uint16(sa.GetPortValue())), nil
}

// tcpConfig is a validated TCP listener.
type tcpConfig struct {
	cluster string
	idle    time.Duration // 0: no idle timeout
	rbac    *rbacPolicy   // nil: every source allowed
	// buffer is the copy buffer per direction: per_connection_buffer_limit_bytes
	// when below the default 32 KiB, so no more is ever held for a connection.
	buffer int
	// connectAttempts is max_connect_attempts (Envoy's default 1): a failed
	// connect is tried again on a host the load balancer picks anew.
	connectAttempts int
	// sni, when set, is a TLS passthrough listener (tls_inspector): each
	// filter chain is its own configuration, chosen by the ClientHello's SNI.
	sni []sniChain
}

// udpConfig is a validated UDP listener.
type udpConfig struct {
	cluster string
	idle    time.Duration
	// allow, when set, is the source-IP matcher's ranges; other sources are dropped.
	allow *rbacPolicy
}

var listenerFields = []string{"name", "address", "filter_chains", "listener_filters", "udp_listener_config",
	"per_connection_buffer_limit_bytes", "traffic_direction", "drain_type", "enable_reuse_port", "stat_prefix"}

// ValidateListener checks a TCP or UDP listener against the supported subset.
func ValidateListener(l *listenerv3.Listener) error {
	if IsUDPListener(l) {
		_, err := parseUDP(l)
		return err
	}
	_, err := parseTCP(l)
	return err
}

func parseTCP(l *listenerv3.Listener) (*tcpConfig, error) {
	name := l.GetName()
	if err := unsupported(fmt.Sprintf("listener %q", name), l, listenerFields...); err != nil {
		return nil, err
	}
	if _, err := Address(l); err != nil {
		return nil, err
	}
	cfg := &tcpConfig{buffer: copyBufferSize}
	if v := l.GetPerConnectionBufferLimitBytes(); v != nil {
		if v.GetValue() == 0 {
			return nil, fmt.Errorf("listener %q: per_connection_buffer_limit_bytes must be at least 1", name)
		}
		cfg.buffer = min(int(v.GetValue()), copyBufferSize)
	}
	if len(l.GetListenerFilters()) > 0 {
		return parseSNIListener(l, cfg)
	}
	if len(l.GetFilterChains()) != 1 {
		return nil, fmt.Errorf("listener %q: filter_chains: exactly one filter chain is supported, got %d", name, len(l.GetFilterChains()))
	}
	fc := l.GetFilterChains()[0]
	if err := unsupported(fmt.Sprintf("listener %q: filter_chains[0]", name), fc, "filters", "name"); err != nil {
		return nil, err
	}
	return cfg, parseTCPFilters(fmt.Sprintf("listener %q: filter_chains[0]", name), fc, cfg)
}

// parseTCPFilters reads a filter chain's network filters (optional RBAC,
// then tcp_proxy) into cfg.
func parseTCPFilters(chain string, fc *listenerv3.FilterChain, cfg *tcpConfig) error {
	filters := fc.GetFilters()
	if len(filters) == 0 || filters[len(filters)-1].GetName() != TCPProxyFilter {
		return fmt.Errorf("%s.filters: the last filter must be %s", chain, TCPProxyFilter)
	}
	for i, f := range filters {
		where := fmt.Sprintf("%s.filters[%d] (%s)", chain, i, f.GetName())
		if f.GetTypedConfig() == nil {
			return fmt.Errorf("%s: typed_config is required", where)
		}
		msg, err := f.GetTypedConfig().UnmarshalNew()
		if err != nil {
			return fmt.Errorf("%s: %v", where, err)
		}
		switch c := msg.(type) {
		case *tcpproxyv3.TcpProxy:
			if i != len(filters)-1 {
				return fmt.Errorf("%s: tcp_proxy must be the last filter", where)
			}
			if err := unsupported(where, c, "stat_prefix", "cluster", "idle_timeout", "max_connect_attempts", "hash_policy"); err != nil {
				return err
			}
			// The source IP is always the hash key handed to the cluster manager,
			// so source_ip is the one hash policy there is.
			for i, h := range c.GetHashPolicy() {
				if h.GetSourceIp() == nil {
					return fmt.Errorf("%s: hash_policy[%d]: only source_ip is supported", where, i)
				}
			}
			if c.GetCluster() == "" {
				return fmt.Errorf("%s: cluster is required", where)
			}
			cfg.cluster = c.GetCluster()
			cfg.connectAttempts = 1
			if v := c.GetMaxConnectAttempts(); v != nil {
				cfg.connectAttempts = int(min(v.GetValue(), 16))
			}
			cfg.idle = defaultTCPIdle
			if c.IdleTimeout != nil {
				cfg.idle = c.GetIdleTimeout().AsDuration()
			}
		case *rbacv3.RBAC:
			if cfg.rbac != nil {
				return fmt.Errorf("%s: only one rbac filter is supported", where)
			}
			p, err := parseRBAC(where, c)
			if err != nil {
				return err
			}
			cfg.rbac = p
		default:
			return fmt.Errorf("%s: network filter type %s is not supported", where, msg.ProtoReflect().Descriptor().FullName())
		}
	}
	return nil
}

func parseUDP(l *listenerv3.Listener) (*udpConfig, error) {
	name := l.GetName()
	if err := unsupported(fmt.Sprintf("listener %q", name), l, listenerFields...); err != nil {
		return nil, err
	}
	if _, err := Address(l); err != nil {
		return nil, err
	}
	if len(l.GetFilterChains()) > 0 {
		return nil, fmt.Errorf("listener %q: filter_chains are not supported on UDP listeners", name)
	}
	if len(l.GetListenerFilters()) != 1 {
		return nil, fmt.Errorf("listener %q: listener_filters: exactly one %s filter is required", name, UDPProxyFilter)
	}
	f := l.GetListenerFilters()[0]
	where := fmt.Sprintf("listener %q: listener_filters[0] (%s)", name, f.GetName())
	if f.GetTypedConfig() == nil {
		return nil, fmt.Errorf("%s: typed_config is required", where)
	}
	msg, err := f.GetTypedConfig().UnmarshalNew()
	if err != nil {
		return nil, fmt.Errorf("%s: %v", where, err)
	}
	c, ok := msg.(*udpproxyv3.UdpProxyConfig)
	if !ok {
		return nil, fmt.Errorf("%s: listener filter type %s is not supported", where, msg.ProtoReflect().Descriptor().FullName())
	}
	if err := unsupported(where, c, "stat_prefix", "cluster", "matcher", "idle_timeout", "hash_policies"); err != nil {
		return nil, err
	}
	cfg := &udpConfig{cluster: c.GetCluster(), idle: defaultUDPIdle}
	if m := c.GetMatcher(); m != nil {
		cluster, allow, err := parseSourceIPMatcher(where+": matcher", m)
		if err != nil {
			return nil, err
		}
		cfg.cluster, cfg.allow = cluster, allow
	}
	for i, h := range c.GetHashPolicies() {
		if !h.GetSourceIp() {
			return nil, fmt.Errorf("%s: hash_policies[%d]: only source_ip is supported", where, i)
		}
	}
	if cfg.cluster == "" {
		return nil, fmt.Errorf("%s: cluster or matcher is required", where)
	}
	if c.IdleTimeout != nil {
		cfg.idle = c.GetIdleTimeout().AsDuration()
	}
	return cfg, nil
}

// ClusterName returns the cluster a TCP or UDP listener proxies to ("" if invalid).
func ClusterName(l *listenerv3.Listener) string {
	if IsUDPListener(l) {
		if c, err := parseUDP(l); err == nil {
			return c.cluster
		}
		return ""
	}
	if c, err := parseTCP(l); err == nil {
		return c.cluster
	}
	return ""
}

// rbacPolicy is the network RBAC filter reduced to what it can express here:
// source address ranges per policy, ALLOW or DENY.
type rbacPolicy struct {
	allow    bool
	policies [][]netip.Prefix // a policy matches when any of its prefixes contains the source
}

// Allowed applies Envoy's semantics: ALLOW admits a source matched by some policy,
// DENY refuses it.
func (p *rbacPolicy) Allowed(src netip.Addr) bool {
	if p == nil {
		return true
	}
	src = src.Unmap()
	matched := false
	for _, pol := range p.policies {
		for _, pfx := range pol {
			if pfx.Contains(src) {
				matched = true
			}
		}
	}
	return matched == p.allow
}

func parseRBAC(where string, c *rbacv3.RBAC) (*rbacPolicy, error) {
	if err := unsupported(where, c, "stat_prefix", "rules"); err != nil {
		return nil, err
	}
	if c.GetRules() == nil {
		return nil, nil // no rules: Envoy does not filter
	}
	rules := c.GetRules()
	if err := unsupported(where+": rules", rules, "action", "policies"); err != nil {
		return nil, err
	}
	p := &rbacPolicy{}
	switch rules.GetAction() {
	case rbacconfigv3.RBAC_ALLOW:
		p.allow = true
	case rbacconfigv3.RBAC_DENY:
	default:
		return nil, fmt.Errorf("%s: rules.action %s is not supported", where, rules.GetAction())
	}
	for name, pol := range rules.GetPolicies() {
		pw := fmt.Sprintf("%s: rules.policies[%q]", where, name)
		if err := unsupported(pw, pol, "permissions", "principals"); err != nil {
			return nil, err
		}
		for i, perm := range pol.GetPermissions() {
			if !perm.GetAny() {
				return nil, fmt.Errorf("%s: permissions[%d]: only any=true is supported", pw, i)
			}
		}
		var prefixes []netip.Prefix
		for i, pr := range pol.GetPrincipals() {
			got, err := principalPrefixes(fmt.Sprintf("%s: principals[%d]", pw, i), pr)
			if err != nil {
				return nil, err
			}
			prefixes = append(prefixes, got...)
		}
		if len(pol.GetPermissions()) > 0 {
			p.policies = append(p.policies, prefixes)
		}
	}
	return p, nil
}

// principalPrefixes flattens a principal made of source-address matchers.
func principalPrefixes(where string, pr *rbacconfigv3.Principal) ([]netip.Prefix, error) {
	switch id := pr.GetIdentifier().(type) {
	case *rbacconfigv3.Principal_Any:
		if id.Any {
			return []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}, nil
		}
	case *rbacconfigv3.Principal_RemoteIp:
		return cidr(where+".remote_ip", id.RemoteIp)
	case *rbacconfigv3.Principal_DirectRemoteIp:
		return cidr(where+".direct_remote_ip", id.DirectRemoteIp)
	case *rbacconfigv3.Principal_SourceIp: //nolint:staticcheck // deprecated alias of direct_remote_ip
		return cidr(where+".source_ip", id.SourceIp)
	case *rbacconfigv3.Principal_OrIds:
		var out []netip.Prefix
		for i, sub := range id.OrIds.GetIds() {
			got, err := principalPrefixes(fmt.Sprintf("%s.or_ids[%d]", where, i), sub)
			if err != nil {
				return nil, err
			}
			out = append(out, got...)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: only remote_ip, direct_remote_ip, source_ip, or_ids and any principals are supported", where)
}

func cidr(where string, c *corev3.CidrRange) ([]netip.Prefix, error) {
	ip, err := netip.ParseAddr(c.GetAddressPrefix())
	if err != nil {
		return nil, fmt.Errorf("%s: address_prefix %q is not an IP", where, c.GetAddressPrefix())
	}
	bits := ip.BitLen()
	if c.PrefixLen != nil {
		bits = int(c.GetPrefixLen().GetValue())
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return nil, fmt.Errorf("%s: prefix_len: %v", where, err)
	}
	return []netip.Prefix{p}, nil
}

// parseSourceIPMatcher accepts the one matcher shape Envoy's udp_proxy needs for
// source ranges: a tree on envoy.matching.inputs.source_ip with an IP range
// custom matcher whose range matchers all route to the same cluster, and no
// on_no_match (everyone else is dropped).
func parseSourceIPMatcher(where string, m *xdsmatcherv3.Matcher) (string, *rbacPolicy, error) {
	if err := unsupported(where, m, "matcher_tree"); err != nil {
		return "", nil, err
	}
	tree := m.GetMatcherTree()
	if err := unsupported(where+".matcher_tree", tree, "input", "custom_match"); err != nil {
		return "", nil, err
	}
	if in, err := tree.GetInput().GetTypedConfig().UnmarshalNew(); err != nil {
		return "", nil, fmt.Errorf("%s.matcher_tree.input: %v", where, err)
	} else if _, ok := in.(*networkinputsv3.SourceIPInput); !ok {
		return "", nil, fmt.Errorf("%s.matcher_tree.input: %s is not supported (only SourceIPInput)", where, in.ProtoReflect().Descriptor().FullName())
	}
	cm, err := tree.GetCustomMatch().GetTypedConfig().UnmarshalNew()
	if err != nil {
		return "", nil, fmt.Errorf("%s.matcher_tree.custom_match: %v", where, err)
	}
	ipm, ok := cm.(*xdsmatcherv3.IPMatcher)
	if !ok {
		return "", nil, fmt.Errorf("%s.matcher_tree.custom_match: %s is not supported (only IPMatcher)", where, cm.ProtoReflect().Descriptor().FullName())
	}
	cluster := ""
	var prefixes []netip.Prefix
	for i, rm := range ipm.GetRangeMatchers() {
		rw := fmt.Sprintf("%s.matcher_tree.custom_match.range_matchers[%d]", where, i)
		if err := unsupported(rw, rm, "ranges", "on_match"); err != nil {
			return "", nil, err
		}
		if err := unsupported(rw+".on_match", rm.GetOnMatch(), "action"); err != nil {
			return "", nil, err
		}
		act, err := rm.GetOnMatch().GetAction().GetTypedConfig().UnmarshalNew()
		if err != nil {
			return "", nil, fmt.Errorf("%s.on_match.action: %v", rw, err)
		}
		route, ok := act.(*udpproxyv3.Route)
		if !ok || route.GetCluster() == "" {
			return "", nil, fmt.Errorf("%s.on_match.action: only a udp_proxy Route with a cluster is supported", rw)
		}
		if cluster != "" && route.GetCluster() != cluster {
			return "", nil, fmt.Errorf("%s: routing source ranges to different clusters is not supported", rw)
		}
		cluster = route.GetCluster()
		for j, r := range rm.GetRanges() {
			p, err := netip.ParsePrefix(fmt.Sprintf("%s/%d", r.GetAddressPrefix(), r.GetPrefixLen().GetValue()))
			if err != nil {
				return "", nil, fmt.Errorf("%s.ranges[%d]: %v", rw, j, err)
			}
			prefixes = append(prefixes, p.Masked())
		}
	}
	if cluster == "" {
		return "", nil, fmt.Errorf("%s: no range matcher routes anywhere", where)
	}
	return cluster, &rbacPolicy{allow: true, policies: [][]netip.Prefix{prefixes}}, nil
}
