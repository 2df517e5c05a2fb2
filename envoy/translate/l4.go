package translate

import (
	"net/netip"

	"fmt"
	xdscorev3 "github.com/cncf/xds/go/xds/core/v3"
	xdsmatcherv3 "github.com/cncf/xds/go/xds/type/matcher/v3"
	networkinputsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/matching/common_inputs/network/v3"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	udpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/udp/udp_proxy/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/fleetlb/fleetlb/internal/model"
)

// Envoy extension names the translator emits (fleetlb-proxy must support exactly these).
const (
	FilterTCPProxy = "envoy.filters.network.tcp_proxy"
	FilterRBAC     = "envoy.filters.network.rbac"
	FilterUDPProxy = "envoy.filters.udp_listener.udp_proxy"
	// Names in the udp_proxy source-range matcher.
	InputSourceIP      = "envoy.matching.inputs.source_ip"
	MatcherIPRange     = "envoy.matching.custom_matchers.ip_range_matcher"
	ActionUDPRoute     = "route"
	FilterHCM          = "envoy.filters.network.http_connection_manager"
	FilterRouter       = "envoy.filters.http.router"
	FilterTLSInspector = "envoy.filters.listener.tls_inspector"
	TransportTLS       = "envoy.transport_sockets.tls"
	TransportProxyProt = "envoy.transport_sockets.upstream_proxy_protocol"
	TransportRawBuffer = "envoy.transport_sockets.raw_buffer"
	HTTPProtocolOpts   = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	// Extensions of the routes' retry_policy.
	RetryPreviousHosts      = "envoy.retry_host_predicates.previous_hosts"
	RetryPreviousPriorities = "envoy.retry_priorities.previous_priorities"
)

const (
	tcpConnectAttempts = 3
	defaultTCPIdle     = time.Hour
	defaultUDPIdle     = time.Minute
)

func l4Listener(s *model.L4Service, b *model.Backend) (*listenerv3.Listener, error) {
	name := L4ListenerName(s.Protocol, s.VIP.String(), s.Port)
	stat := fmt.Sprintf("%s_%s_%s_%d", s.Ref.Tenant, s.Ref.Namespace, s.Ref.Name, s.Port)
	if s.Protocol == model.UDP {
		cfg := &udpproxyv3.UdpProxyConfig{
			StatPrefix:     stat,
			RouteSpecifier: &udpproxyv3.UdpProxyConfig_Cluster{Cluster: s.Backend},
			IdleTimeout:    duration(s.IdleTimeout, defaultUDPIdle),
		}
		if len(s.SourceRanges) > 0 {
			// The network RBAC filter does not run on UDP listeners: a source-IP
			// matcher routes allowed clients to the cluster and, having no
			// on_no_match, drops everyone else's datagrams.
			cfg.RouteSpecifier = &udpproxyv3.UdpProxyConfig_Matcher{Matcher: sourceIPMatcher(s.SourceRanges, s.Backend)}
		}
		if b.SessionAffinity {
			cfg.HashPolicies = []*udpproxyv3.UdpProxyConfig_HashPolicy{{
				PolicySpecifier: &udpproxyv3.UdpProxyConfig_HashPolicy_SourceIp{SourceIp: true},
			}}
		}
		return &listenerv3.Listener{
			Name:              name,
			Address:           socketAddress(s.VIP, s.Port, true),
			UdpListenerConfig: &listenerv3.UdpListenerConfig{},
			ListenerFilters: []*listenerv3.ListenerFilter{{
				Name:       FilterUDPProxy,
				ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: typed(cfg)},
			}},
		}, nil
	}

	var filters []*listenerv3.Filter
	if len(s.SourceRanges) > 0 {
		var principals []*rbacconfigv3.Principal
		for _, r := range s.SourceRanges {
			principals = append(principals, &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_DirectRemoteIp{
				DirectRemoteIp: &corev3.CidrRange{AddressPrefix: r.Masked().Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(r.Bits()))},
			}})
		}
		filters = append(filters, &listenerv3.Filter{Name: FilterRBAC, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: typed(&rbacv3.RBAC{
			StatPrefix: stat,
			Rules: &rbacconfigv3.RBAC{
				Action: rbacconfigv3.RBAC_ALLOW,
				Policies: map[string]*rbacconfigv3.Policy{"source-ranges": {
					Permissions: []*rbacconfigv3.Permission{{Rule: &rbacconfigv3.Permission_Any{Any: true}}},
					Principals:  principals,
				}},
			},
		})}})
	}
	tp := &tcpproxyv3.TcpProxy{
		StatPrefix:       stat,
		ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: s.Backend},
		IdleTimeout:      duration(s.IdleTimeout, defaultTCPIdle),
		// A refused connect is tried again on another host: the failed one
		// is ejected by outlier detection at once, so a dead node costs a
		// client no connection (Envoy's default is one attempt).
		MaxConnectAttempts: wrapperspb.UInt32(tcpConnectAttempts),
	}
	if b.SessionAffinity {
		tp.HashPolicy = []*typev3.HashPolicy{{PolicySpecifier: &typev3.HashPolicy_SourceIp_{SourceIp: &typev3.HashPolicy_SourceIp{}}}}
	}
	filters = append(filters, &listenerv3.Filter{Name: FilterTCPProxy, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: typed(tp)}})
	return &listenerv3.Listener{
		Name:                          name,
		Address:                       socketAddress(s.VIP, s.Port, false),
		FilterChains:                  []*listenerv3.FilterChain{{Filters: filters}},
		PerConnectionBufferLimitBytes: wrapperspb.UInt32(connectionBufferLimit),
	}, nil
}

// sourceIPMatcher is a udp_proxy matcher that routes the given source ranges to cluster.
func sourceIPMatcher(ranges []netip.Prefix, cluster string) *xdsmatcherv3.Matcher {
	var cidrs []*xdscorev3.CidrRange
	for _, r := range ranges {
		cidrs = append(cidrs, &xdscorev3.CidrRange{AddressPrefix: r.Masked().Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(r.Bits()))})
	}
	return &xdsmatcherv3.Matcher{MatcherType: &xdsmatcherv3.Matcher_MatcherTree_{MatcherTree: &xdsmatcherv3.Matcher_MatcherTree{
		Input: &xdscorev3.TypedExtensionConfig{Name: InputSourceIP, TypedConfig: typed(&networkinputsv3.SourceIPInput{})},
		TreeType: &xdsmatcherv3.Matcher_MatcherTree_CustomMatch{CustomMatch: &xdscorev3.TypedExtensionConfig{
			Name: MatcherIPRange,
			TypedConfig: typed(&xdsmatcherv3.IPMatcher{RangeMatchers: []*xdsmatcherv3.IPMatcher_IPRangeMatcher{{
				Ranges: cidrs,
				OnMatch: &xdsmatcherv3.Matcher_OnMatch{OnMatch: &xdsmatcherv3.Matcher_OnMatch_Action{Action: &xdscorev3.TypedExtensionConfig{
					Name: ActionUDPRoute, TypedConfig: typed(&udpproxyv3.Route{Cluster: cluster}),
				}}},
			}}}),
		}},
	}}}
}
