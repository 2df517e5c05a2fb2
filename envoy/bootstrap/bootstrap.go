// Package bootstrap writes the Envoy bootstrap for one proxy fleet: ADS to
// the fleetlb-manager (SotW or delta) over HTTP/2 with keepalives, admin on
// localhost, the overload manager, and a /ready listener served by the worker
// threads, so a readiness probe proves Envoy really serves.
package bootstrap

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	overloadv3 "github.com/envoyproxy/go-control-plane/envoy/config/overload/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	fixedheapv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/fixed_heap/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"sigs.k8s.io/yaml"
)

// Options describe one fleet's Envoy.
type Options struct {
	// Fleet is the ProxyFleet name, sent as node.cluster (the server keys snapshots by it).
	Fleet string `json:"fleet"`
	// NodeID is node.id; deploy/ passes the pod name ("$(POD_NAME)").
	NodeID string `json:"nodeID"`
	// XDSAddress is the manager's xDS server, host:port (a DNS name or an IP).
	XDSAddress string `json:"xdsAddress"`
	// Delta selects incremental xDS (DELTA_GRPC) instead of state of the world.
	Delta bool `json:"delta,omitempty"`
	// AdminPort on 127.0.0.1 (default 19000).
	AdminPort uint32 `json:"adminPort,omitempty"`
	// HealthPort serves /ready from the worker threads (default 19001).
	HealthPort uint32 `json:"healthPort,omitempty"`
	// MaxHeapBytes drives the overload manager (default 1 GiB).
	MaxHeapBytes uint64 `json:"maxHeapBytes,omitempty"`
	// MaxConnections is overload.global_downstream_max_connections (default 50000).
	MaxConnections uint64 `json:"maxConnections,omitempty"`
}

func (o *Options) defaults() error {
	var errs []error
	if o.Fleet == "" {
		errs = append(errs, errors.New("fleet must not be empty"))
	}
	if o.NodeID == "" {
		errs = append(errs, errors.New("nodeID must not be empty"))
	}
	host, port, err := net.SplitHostPort(o.XDSAddress)
	if err != nil || host == "" {
		errs = append(errs, fmt.Errorf("xdsAddress %q must be host:port", o.XDSAddress))
	} else if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		errs = append(errs, fmt.Errorf("xdsAddress %q: port must be 1-65535", o.XDSAddress))
	}
	o.AdminPort, o.HealthPort = cmp.Or(o.AdminPort, 19000), cmp.Or(o.HealthPort, 19001)
	for i, p := range []uint32{o.AdminPort, o.HealthPort} {
		if p > 65535 {
			errs = append(errs, fmt.Errorf("%s %d must be 1-65535", []string{"adminPort", "healthPort"}[i], p))
		}
	}
	if o.AdminPort == o.HealthPort {
		errs = append(errs, fmt.Errorf("adminPort and healthPort must differ (both %d)", o.AdminPort))
	}
	o.MaxHeapBytes, o.MaxConnections = cmp.Or(o.MaxHeapBytes, 1<<30), cmp.Or(o.MaxConnections, 50000)
	return errors.Join(errs...)
}

const xdsCluster = "xds"

// Bootstrap builds the bootstrap proto; it passes Validate().
func Bootstrap(o Options) (*bootstrapv3.Bootstrap, error) {
	if err := o.defaults(); err != nil {
		return nil, fmt.Errorf("bootstrap options: %w", err)
	}
	host, portStr, _ := net.SplitHostPort(o.XDSAddress)
	port, _ := strconv.Atoi(portStr)
	discovery := clusterv3.Cluster_STRICT_DNS
	if _, err := netip.ParseAddr(host); err == nil {
		discovery = clusterv3.Cluster_STATIC
	}
	apiType := corev3.ApiConfigSource_GRPC
	if o.Delta {
		apiType = corev3.ApiConfigSource_DELTA_GRPC
	}
	ads := &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3, ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	runtimeLayer, err := structpb.NewStruct(map[string]any{"overload": map[string]any{"global_downstream_max_connections": float64(o.MaxConnections)}})
	if err != nil {
		return nil, err
	}
	b := &bootstrapv3.Bootstrap{
		Node: &corev3.Node{Id: o.NodeID, Cluster: o.Fleet},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType: apiType, TransportApiVersion: corev3.ApiVersion_V3, SetNodeOnFirstMessageOnly: true,
				GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: xdsCluster}}}},
			},
			LdsConfig: ads,
			CdsConfig: ads,
		},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Clusters:  []*clusterv3.Cluster{xdsClusterFor(host, uint32(port), discovery)},
			Listeners: []*listenerv3.Listener{healthListener(o.HealthPort)},
		},
		Admin: &bootstrapv3.Admin{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: o.AdminPort}}}}},
		OverloadManager: &overloadv3.OverloadManager{
			RefreshInterval: durationpb.New(250 * time.Millisecond),
			ResourceMonitors: []*overloadv3.ResourceMonitor{{
				Name:       "envoy.resource_monitors.fixed_heap",
				ConfigType: &overloadv3.ResourceMonitor_TypedConfig{TypedConfig: mustAny(&fixedheapv3.FixedHeapConfig{MaxHeapSizeBytes: o.MaxHeapBytes})},
			}},
			Actions: []*overloadv3.OverloadAction{
				{Name: "envoy.overload_actions.shrink_heap", Triggers: []*overloadv3.Trigger{threshold(0.95)}},
				{Name: "envoy.overload_actions.stop_accepting_requests", Triggers: []*overloadv3.Trigger{threshold(0.98)}},
			},
		},
		LayeredRuntime: &bootstrapv3.LayeredRuntime{Layers: []*bootstrapv3.RuntimeLayer{{
			Name: "static", LayerSpecifier: &bootstrapv3.RuntimeLayer_StaticLayer{StaticLayer: runtimeLayer},
		}}},
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("bootstrap does not validate (a bug): %w", err)
	}
	return b, nil
}

func threshold(v float64) *overloadv3.Trigger {
	return &overloadv3.Trigger{Name: "envoy.resource_monitors.fixed_heap",
		TriggerOneof: &overloadv3.Trigger_Threshold{Threshold: &overloadv3.ThresholdTrigger{Value: v}}}
}

func xdsClusterFor(host string, port uint32, discovery clusterv3.Cluster_DiscoveryType) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 xdsCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: discovery},
		ConnectTimeout:       durationpb.New(5 * time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: xdsCluster, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}},
			}}}},
		}}},
		// The manager serves gRPC: HTTP/2 with keepalive pings, so a dead
		// manager is noticed in seconds and Envoy reconnects to another replica.
		TypedExtensionProtocolOptions: map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(&httpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{
					ConnectionKeepalive: &corev3.KeepaliveSettings{Interval: durationpb.New(30 * time.Second), Timeout: durationpb.New(5 * time.Second)},
				}},
			}},
		})},
		UpstreamConnectionOptions: &clusterv3.UpstreamConnectionOptions{TcpKeepalive: &corev3.TcpKeepalive{
			KeepaliveProbes: wrapperspb.UInt32(3), KeepaliveTime: wrapperspb.UInt32(30), KeepaliveInterval: wrapperspb.UInt32(5),
		}},
	}
}

// healthListener answers 200 on /ready from a worker thread (and 404 elsewhere).
func healthListener(port uint32) *listenerv3.Listener {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: "health",
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: "health",
			VirtualHosts: []*routev3.VirtualHost{{Name: "health", Domains: []string{"*"}, Routes: []*routev3.Route{{
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/ready"}},
				Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200,
					Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "ready\n"}}}},
			}}}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})}}},
	}
	return &listenerv3.Listener{
		Name: "health",
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "0.0.0.0", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)},
		}}}},
	}
}

// YAML renders the bootstrap as Envoy reads it (--config-path), with stable key order.
func YAML(o Options) ([]byte, error) {
	b, err := Bootstrap(o)
	if err != nil {
		return nil, err
	}
	js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(b)
	if err != nil {
		return nil, err
	}
	var v any
	if err := json.Unmarshal(js, &v); err != nil {
		return nil, err
	}
	return yaml.Marshal(v)
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err) // fixed message types: a programming error
	}
	return a
}
