package translate

import (
	"cmp"
	"slices"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	proxyprotocolv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/proxy_protocol/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/fleetlb/fleetlb/internal/model"
)

const (
	// A tenant node that has not answered a SYN within a second is dead or
	// black-holed for this connection: one second is more than three times
	// the longest WAN round trip (≈ 300 ms antipodal), and Linux retransmits
	// a lost SYN only after its initial 1 s RTO, so waiting longer saves a
	// connect only after a lost SYN, which a retry on another host (HTTP
	// retry_on connect-failure, tcp_proxy max_connect_attempts) does as well.
	// Below the 2 s most clients give a request, so the retry to the failover
	// cluster still reaches them (Envoy's default 5 s does not).
	defaultConnectTimeout   = time.Second
	circuitBreakerThreshold = 1024
	upstreamIdleTimeout     = 60 * time.Second

	retryBudgetPercent        = 20
	retryBudgetMinConcurrency = 3
)

// cluster builds the EDS cluster of a backend and its load assignment.
func cluster(b *model.Backend) (*clusterv3.Cluster, *endpointv3.ClusterLoadAssignment, error) {
	c := &clusterv3.Cluster{
		Name:                 b.Name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
		ConnectTimeout:       duration(b.ConnectTimeout, defaultConnectTimeout),
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
	}
	if b.SessionAffinity {
		c.LbPolicy = clusterv3.Cluster_RING_HASH
	}
	if b.LocalityWeighted {
		c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{
			LocalityConfigSpecifier: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig_{
				LocalityWeightedLbConfig: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig{},
			},
		}
	}
	if b.Protocol != model.BackendUDP {
		// Dead peers behind NAT or a node that vanished are found in minutes, not hours.
		c.UpstreamConnectionOptions = &clusterv3.UpstreamConnectionOptions{TcpKeepalive: &corev3.TcpKeepalive{
			KeepaliveProbes: wrapperspb.UInt32(3), KeepaliveTime: wrapperspb.UInt32(60), KeepaliveInterval: wrapperspb.UInt32(10),
		}}
	}
	// Envoy's default thresholds, written out: one tenant's backend can hold at
	// most this many upstream connections (UDP: sessions) and requests of the
	// fleet, whatever its clients do.
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		Priority:           corev3.RoutingPriority_DEFAULT,
		MaxConnections:     wrapperspb.UInt32(circuitBreakerThreshold),
		MaxPendingRequests: wrapperspb.UInt32(circuitBreakerThreshold),
		MaxRequests:        wrapperspb.UInt32(circuitBreakerThreshold),
	}}}
	if b.Protocol != model.BackendUDP {
		c.PerConnectionBufferLimitBytes = wrapperspb.UInt32(connectionBufferLimit)
	}
	var upstreamHTTP *httpv3.HttpProtocolOptions_ExplicitHttpConfig
	switch b.Protocol {
	case model.BackendHTTP2, model.BackendGRPC:
		upstreamHTTP = &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}
	case model.BackendHTTP1:
		upstreamHTTP = &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}},
		}
	}
	if upstreamHTTP != nil {
		// Retries (the virtual hosts' retry_policy) may add at most a fifth
		// of the requests in flight, at least three: a dying backend cannot
		// make the fleet multiply its load.
		c.CircuitBreakers.Thresholds[0].RetryBudget = &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
			BudgetPercent:       &typev3.Percent{Value: retryBudgetPercent},
			MinRetryConcurrency: wrapperspb.UInt32(retryBudgetMinConcurrency),
		}
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{HTTPProtocolOpts: typed(&httpv3.HttpProtocolOptions{
			// Below nginx's 75 s keepalive_timeout (the usual ingress in a tenant
			// cluster), so a pooled connection is rarely reused just as the backend
			// closes it, and no idle connection holds a slot of the backend's
			// max_connections for Envoy's default hour.
			CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(upstreamIdleTimeout)},
			UpstreamProtocolOptions:   &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: upstreamHTTP},
		})}
	}
	if b.ProxyProtocol != 0 {
		version := corev3.ProxyProtocolConfig_V1
		if b.ProxyProtocol == 2 {
			version = corev3.ProxyProtocolConfig_V2
		}
		c.TransportSocket = &corev3.TransportSocket{
			Name: TransportProxyProt,
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: typed(&proxyprotocolv3.ProxyProtocolUpstreamTransport{
				Config: &corev3.ProxyProtocolConfig{Version: version},
				TransportSocket: &corev3.TransportSocket{
					Name:       TransportRawBuffer,
					ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: typed(&rawbufferv3.RawBuffer{})},
				},
			})},
		}
	}
	if hc := b.HealthCheck; hc != nil {
		c.HealthChecks = []*corev3.HealthCheck{healthCheck(b, hc)}
	}
	if b.Protocol != model.BackendUDP {
		// Passive detection on every TCP and HTTP backend: udp_proxy reports
		// nothing to outlier detection.
		c.OutlierDetection = outlierDetection(b.Outlier)
	}
	return c, loadAssignment(b), nil
}

// Active health-check defaults, chosen so a dead node is out in about a
// second and a half (interval plus one edge check, see README.md) while an
// idle cluster costs a fifth of that.
const (
	defaultHealthInterval  = time.Second
	defaultHealthTimeout   = 500 * time.Millisecond
	defaultUnhealthyAfter  = 2
	defaultHealthyAfter    = 2
	minNoTrafficHealthy    = 5 * time.Second
	healthJitterDivisor    = 10 // interval_jitter = interval / 10
	unhealthyIntervalTimes = 2  // a host already down is probed at half the rate
)

// healthCheck is the active check of a backend. Intervals derive from the
// (model or default) interval so a tenant's longer interval scales them all.
func healthCheck(b *model.Backend, hc *model.HealthCheck) *corev3.HealthCheck {
	interval := cmp.Or(hc.Interval.D(), defaultHealthInterval)
	edge := max(interval/2, 100*time.Millisecond)
	check := &corev3.HealthCheck{
		Timeout:            duration(hc.Timeout, defaultHealthTimeout),
		Interval:           durationpb.New(interval),
		IntervalJitter:     durationpb.New(interval / healthJitterDivisor),
		UnhealthyThreshold: wrapperspb.UInt32(cmp.Or(hc.UnhealthyThreshold, defaultUnhealthyAfter)),
		HealthyThreshold:   wrapperspb.UInt32(cmp.Or(hc.HealthyThreshold, defaultHealthyAfter)),
		// A healthy host that failed once is checked again soon, so the
		// threshold costs half an interval, not a whole one; the same on
		// the way back.
		UnhealthyEdgeInterval: durationpb.New(edge),
		HealthyEdgeInterval:   durationpb.New(edge),
		UnhealthyInterval:     durationpb.New(unhealthyIntervalTimes * interval),
		// A cluster that never carried traffic (Envoy's upstream_cx_total
		// is 0), typically a standby, probes its healthy hosts less often
		// (Envoy's default is 60 s) but a new or failing host at the normal
		// interval, so a standby whose backends came up after their
		// endpoints is known healthy within a second or two, before it is
		// needed.
		NoTrafficInterval:        durationpb.New(interval),
		NoTrafficHealthyInterval: durationpb.New(max(minNoTrafficHealthy, interval)),
	}
	switch hc.Type {
	case model.HealthHTTP:
		h := &corev3.HealthCheck_HttpHealthCheck{Path: hc.Path}
		for _, s := range hc.ExpectedStatuses {
			h.ExpectedStatuses = append(h.ExpectedStatuses, &typev3.Int64Range{Start: int64(s), End: int64(s) + 1})
		}
		if len(h.ExpectedStatuses) == 0 {
			// The model's default; Envoy's alone would be 200 only.
			h.ExpectedStatuses = []*typev3.Int64Range{{Start: 200, End: 300}}
		}
		if b.Protocol == model.BackendHTTP2 || b.Protocol == model.BackendGRPC {
			h.CodecClientType = typev3.CodecClientType_HTTP2
		}
		check.HealthChecker = &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: h}
	default:
		check.HealthChecker = &corev3.HealthCheck_TcpHealthCheck_{TcpHealthCheck: &corev3.HealthCheck_TcpHealthCheck{}}
	}
	return check
}

// Outlier-detection defaults: local-origin errors (connect failures,
// resets, timeouts) are counted apart from HTTP 5xx, and one is enough to
// eject, so the first refused connect takes a dead node out.
const (
	defaultOutlierInterval      = time.Second
	defaultBaseEjectionTime     = 5 * time.Second
	defaultMaxEjectionTime      = 30 * time.Second
	defaultMaxEjectionPercent   = 100
	defaultConsecutive5xx       = 5
	defaultConsecutiveLocalFail = 1
)

// defaultOutlierDetection is that of every backend that sets none of its
// own: one message shared (never modified: resources are only read once
// built), not ~1 KB per cluster kept by the translator.
var defaultOutlierDetection = newOutlierDetection(&model.Outlier{})

func outlierDetection(o *model.Outlier) *clusterv3.OutlierDetection {
	if o == nil || *o == (model.Outlier{}) {
		return defaultOutlierDetection
	}
	return newOutlierDetection(o)
}

func newOutlierDetection(o *model.Outlier) *clusterv3.OutlierDetection {
	return &clusterv3.OutlierDetection{
		Consecutive_5Xx:                wrapperspb.UInt32(cmp.Or(o.Consecutive5xx, defaultConsecutive5xx)),
		Interval:                       duration(o.Interval, defaultOutlierInterval),
		BaseEjectionTime:               duration(o.BaseEjectionTime, defaultBaseEjectionTime),
		MaxEjectionTime:                durationpb.New(max(defaultMaxEjectionTime, cmp.Or(o.BaseEjectionTime.D(), defaultBaseEjectionTime))),
		MaxEjectionPercent:             wrapperspb.UInt32(cmp.Or(o.MaxEjectionPercent, defaultMaxEjectionPercent)),
		SplitExternalLocalOriginErrors: true,
		ConsecutiveLocalOriginFailure:  wrapperspb.UInt32(defaultConsecutiveLocalFail),
		// Success-rate ejection is on by default in Envoy; fleetlb does not
		// use it (and fleetlb-proxy does not implement it).
		EnforcingSuccessRate:            wrapperspb.UInt32(0),
		EnforcingLocalOriginSuccessRate: wrapperspb.UInt32(0),
	}
}

// loadAssignment groups endpoints into localities (tenant cluster, zone) with
// priorities renumbered densely from 0, as Envoy expects.
func loadAssignment(b *model.Backend) *endpointv3.ClusterLoadAssignment {
	groups := slices.Clone(b.Groups)
	slices.SortFunc(groups, func(x, y model.EndpointGroup) int {
		return cmp.Or(cmp.Compare(x.Priority, y.Priority), cmp.Compare(x.Cluster, y.Cluster), cmp.Compare(x.Zone, y.Zone))
	})
	dense := map[uint32]uint32{}
	for _, g := range groups {
		if _, ok := dense[g.Priority]; !ok {
			dense[g.Priority] = uint32(len(dense))
		}
	}
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: b.Name}
	udp := b.Protocol == model.BackendUDP
	for _, g := range groups {
		if len(g.Endpoints) == 0 {
			continue
		}
		eps := slices.Clone(g.Endpoints)
		slices.SortFunc(eps, func(x, y model.Endpoint) int {
			return cmp.Or(x.Address.Compare(y.Address), cmp.Compare(x.Port, y.Port))
		})
		loc := &endpointv3.LocalityLbEndpoints{
			Locality: &corev3.Locality{Region: g.Cluster, Zone: g.Zone},
			Priority: dense[g.Priority],
		}
		if b.LocalityWeighted {
			loc.LoadBalancingWeight = wrapperspb.UInt32(g.Weight)
		}
		for _, ep := range eps {
			e := &endpointv3.Endpoint{Address: socketAddress(ep.Address, ep.Port, udp)}
			if hc := b.HealthCheck; hc != nil && hc.Port != 0 {
				e.HealthCheckConfig = &endpointv3.Endpoint_HealthCheckConfig{PortValue: uint32(hc.Port)}
			}
			loc.LbEndpoints = append(loc.LbEndpoints, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: e}})
		}
		cla.Endpoints = append(cla.Endpoints, loc)
	}
	return cla
}
