// Package bootstrap writes the Envoy bootstrap for one proxy fleet: ADS to
// the fleetlb-manager (SotW or delta) over HTTP/2 with keepalives and mutual
// TLS, admin on a Unix socket, the overload manager, and a /ready listener
// served by the worker threads, so a readiness probe proves Envoy really
// serves.
//
// The xDS client certificate and CA are files of the fleet's mounted Secret
// (tls.crt, tls.key, ca.crt). Envoy reads them through file-based SDS (two
// small files next to the bootstrap, see Files) that watch the Secret's
// directory, so a renewed certificate is used from the next connection on
// without restarting Envoy: a static TLS context would read them only once.
package bootstrap

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path"
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
	downstreamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"
	fixedheapv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/fixed_heap/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"sigs.k8s.io/yaml"

	"github.com/fleetlb/fleetlb/internal/xdstransport"
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
	// AdminSocket is the Unix socket of Envoy's admin interface (default
	// /var/run/envoy/admin.sock): never a TCP port a tenant's traffic could reach.
	AdminSocket string `json:"adminSocket,omitempty"`
	// TLSDir is where the fleet's xDS client Secret is mounted (tls.crt,
	// tls.key, ca.crt); empty connects in plaintext (the manager's --xds-insecure).
	TLSDir string `json:"tlsDir,omitempty"`
	// ConfigDir is where the bootstrap and the SDS files of Files are mounted (default /etc/envoy).
	ConfigDir string `json:"configDir,omitempty"`
	// HealthPort serves /ready from the worker threads (default 19001).
	HealthPort uint32 `json:"healthPort,omitempty"`
	// MaxHeapBytes drives the overload manager (default 1 GiB).
	MaxHeapBytes uint64 `json:"maxHeapBytes,omitempty"`
	// MaxConnections caps active downstream connections through the overload manager (default 50000).
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
	o.HealthPort = cmp.Or(o.HealthPort, 19001)
	if o.HealthPort > 65535 {
		errs = append(errs, fmt.Errorf("healthPort %d must be 1-65535", o.HealthPort))
	}
	o.AdminSocket, o.ConfigDir = cmp.Or(o.AdminSocket, "/var/run/envoy/admin.sock"), cmp.Or(o.ConfigDir, "/etc/envoy")
	for _, p := range [][2]string{{"adminSocket", o.AdminSocket}, {"configDir", o.ConfigDir}, {"tlsDir", o.TLSDir}} {
		if p[1] != "" && !path.IsAbs(p[1]) {
			errs = append(errs, fmt.Errorf("%s %q must be an absolute path", p[0], p[1]))
		}
	}
	o.MaxHeapBytes, o.MaxConnections = cmp.Or(o.MaxHeapBytes, 1<<30), cmp.Or(o.MaxConnections, 50000)
	return errors.Join(errs...)
}

const (
	xdsCluster = "xds"
	// SDS files (keys of Files) holding the xDS client certificate and the
	// validation context, and the names of the secrets in them.
	ClientCertificateFile = "xds-client-certificate.yaml"
	ValidationContextFile = "xds-validation-context.yaml"
	clientCertificateName = "xds_client_certificate"
	validationContextName = "xds_validation_context"
)

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
	b := &bootstrapv3.Bootstrap{
		Node: &corev3.Node{Id: o.NodeID, Cluster: o.Fleet},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType: apiType, TransportApiVersion: corev3.ApiVersion_V3, SetNodeOnFirstMessageOnly: true,
				GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{
					ClusterName: xdsCluster, MaxReceiveMessageLength: wrapperspb.UInt32(xdstransport.MaxMessageBytes)}}}},
			},
			LdsConfig: ads,
			CdsConfig: ads,
		},
		// Load reports (LRS) to the manager over the xDS cluster: it tells
		// operators which tenant cluster serves a global name.
		ClusterManager: &bootstrapv3.ClusterManager{LoadStatsConfig: &corev3.ApiConfigSource{
			ApiType: corev3.ApiConfigSource_GRPC, TransportApiVersion: corev3.ApiVersion_V3,
			GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: xdsCluster}}}},
		}},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Clusters:  []*clusterv3.Cluster{xdsClusterFor(host, uint32(port), discovery, o)},
			Listeners: []*listenerv3.Listener{healthListener(o.HealthPort)},
		},
		// Only processes in the pod that share the socket's directory reach admin (mode 0600).
		Admin: &bootstrapv3.Admin{Address: &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: o.AdminSocket, Mode: 0o600}}}},
		OverloadManager: &overloadv3.OverloadManager{
			RefreshInterval: durationpb.New(250 * time.Millisecond),
			ResourceMonitors: []*overloadv3.ResourceMonitor{{
				Name:       "envoy.resource_monitors.fixed_heap",
				ConfigType: &overloadv3.ResourceMonitor_TypedConfig{TypedConfig: mustAny(&fixedheapv3.FixedHeapConfig{MaxHeapSizeBytes: o.MaxHeapBytes})},
			}, {
				// The same cap as fleetlb-proxy's --max-connections: new connections past it are closed at accept.
				Name: "envoy.resource_monitors.global_downstream_max_connections",
				ConfigType: &overloadv3.ResourceMonitor_TypedConfig{TypedConfig: mustAny(&downstreamv3.DownstreamConnectionsConfig{
					MaxActiveDownstreamConnections: int64(o.MaxConnections)})},
			}},
			Actions: []*overloadv3.OverloadAction{
				{Name: "envoy.overload_actions.shrink_heap", Triggers: []*overloadv3.Trigger{threshold(0.95)}},
				{Name: "envoy.overload_actions.stop_accepting_requests", Triggers: []*overloadv3.Trigger{threshold(0.98)}},
			},
		},
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

func xdsClusterFor(host string, port uint32, discovery clusterv3.Cluster_DiscoveryType, o Options) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
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
	if o.TLSDir != "" {
		c.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls",
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(upstreamTLS(host, o))}}
	}
	return c
}

// upstreamTLS presents the fleet's client certificate and accepts only a
// server certificate from the fleet's CA that names the host Envoy dials.
func upstreamTLS(host string, o Options) *tlsv3.UpstreamTlsContext {
	sds := func(file string) *corev3.ConfigSource {
		return &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3, ConfigSourceSpecifier: &corev3.ConfigSource_PathConfigSource{
			PathConfigSource: &corev3.PathConfigSource{Path: path.Join(o.ConfigDir, file)}}}
	}
	san := &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_DNS,
		Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: host}}}
	sni := host
	if _, err := netip.ParseAddr(host); err == nil {
		san.SanType, sni = tlsv3.SubjectAltNameMatcher_IP_ADDRESS, "" // SNI never carries an address
	}
	return &tlsv3.UpstreamTlsContext{
		Sni: sni,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			AlpnProtocols:                  []string{"h2"},
			TlsParams:                      &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2},
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: clientCertificateName, SdsConfig: sds(ClientCertificateFile)}},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{san}},
				ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: validationContextName, SdsConfig: sds(ValidationContextFile)},
			}},
		},
	}
}

// sdsFiles are the file-based SDS resources the TLS context reads: each
// points at the Secret's files and watches its directory, where Kubernetes
// swaps in a renewed Secret atomically.
func sdsFiles(o Options) (map[string]*tlsv3.Secret, error) {
	watch := &corev3.WatchedDirectory{Path: o.TLSDir}
	file := func(name string) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path.Join(o.TLSDir, name)}}
	}
	out := map[string]*tlsv3.Secret{
		ClientCertificateFile: {Name: clientCertificateName, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: file("tls.crt"), PrivateKey: file("tls.key"), WatchedDirectory: watch}}},
		ValidationContextFile: {Name: validationContextName, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: file("ca.crt"), WatchedDirectory: watch}}},
	}
	for name, s := range out {
		if err := s.Validate(); err != nil {
			return nil, fmt.Errorf("%s does not validate (a bug): %w", name, err)
		}
	}
	return out, nil
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
	return toYAML(b)
}

// BootstrapFile is the bootstrap's key in Files.
const BootstrapFile = "envoy.yaml"

// Files are what goes into ConfigDir: the bootstrap (BootstrapFile) and,
// with TLSDir, the SDS files of the xDS client certificate and validation context.
func Files(o Options) (map[string][]byte, error) {
	boot, err := YAML(o)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{BootstrapFile: boot}
	if o.TLSDir == "" {
		return out, nil
	}
	secrets, err := sdsFiles(o)
	if err != nil {
		return nil, err
	}
	for name, s := range secrets {
		// Envoy reads a file-based SDS source as a DiscoveryResponse.
		b, err := toYAML(&discoveryv3.DiscoveryResponse{Resources: []*anypb.Any{mustAny(s)}})
		if err != nil {
			return nil, err
		}
		out[name] = b
	}
	return out, nil
}

func toYAML(m proto.Message) ([]byte, error) {
	js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
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
