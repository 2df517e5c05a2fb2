package upstream

import (
	"fmt"
	"math/rand/v2"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	proxyprotocolv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/proxy_protocol/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

const (
	httpOptionsName   = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	proxyProtocolName = "envoy.transport_sockets.upstream_proxy_protocol"
)

func randFloat() float64 { return rand.Float64() }

// ValidateCluster accepts what this cluster manager implements and names the
// first thing it does not, so the proxy NACKs instead of ignoring it.
func ValidateCluster(c *clusterv3.Cluster) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("cluster %q: %s is not supported", c.GetName(), fmt.Sprintf(format, args...))
	}
	if c.GetType() != clusterv3.Cluster_EDS {
		return bad("type %s (only EDS)", c.GetType())
	}
	if c.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil {
		return bad("eds_cluster_config other than ADS")
	}
	switch c.GetLbPolicy() {
	case clusterv3.Cluster_ROUND_ROBIN, clusterv3.Cluster_RING_HASH:
	default:
		return bad("lb_policy %s", c.GetLbPolicy())
	}
	if cfg := c.GetCommonLbConfig(); cfg != nil {
		if cfg.GetZoneAwareLbConfig() != nil || cfg.GetHealthyPanicThreshold() != nil || cfg.GetConsistentHashingLbConfig() != nil {
			return bad("common_lb_config other than locality_weighted_lb_config")
		}
	}
	if len(c.GetHealthChecks()) > 1 {
		return bad("more than one health check")
	}
	for _, hc := range c.GetHealthChecks() {
		switch {
		case hc.GetTcpHealthCheck() != nil:
			if hc.GetTcpHealthCheck().GetSend() != nil || len(hc.GetTcpHealthCheck().GetReceive()) > 0 {
				return bad("health_checks.tcp_health_check send/receive")
			}
		case hc.GetHttpHealthCheck() != nil:
		default:
			return bad("health check kind other than tcp_health_check and http_health_check")
		}
	}
	for name, opt := range c.GetTypedExtensionProtocolOptions() {
		if name != httpOptionsName {
			return bad("typed_extension_protocol_options %q", name)
		}
		var o httpv3.HttpProtocolOptions
		if err := opt.UnmarshalTo(&o); err != nil {
			return fmt.Errorf("cluster %q: typed_extension_protocol_options: %w", c.GetName(), err)
		}
		if o.GetExplicitHttpConfig() == nil {
			return bad("HttpProtocolOptions other than explicit_http_config")
		}
	}
	if ts := c.GetTransportSocket(); ts != nil {
		if ts.GetName() != proxyProtocolName {
			return bad("transport_socket %q", ts.GetName())
		}
		var pp proxyprotocolv3.ProxyProtocolUpstreamTransport
		if err := ts.GetTypedConfig().UnmarshalTo(&pp); err != nil {
			return fmt.Errorf("cluster %q: transport_socket: %w", c.GetName(), err)
		}
		if inner := pp.GetTransportSocket(); inner != nil && inner.GetName() != "envoy.transport_sockets.raw_buffer" {
			return bad("proxy protocol wrapping transport socket %q", inner.GetName())
		}
	}
	if c.GetCircuitBreakers() != nil || c.GetLoadAssignment() != nil || c.GetDnsLookupFamily() != clusterv3.Cluster_AUTO {
		return bad("circuit_breakers, inline load_assignment or dns settings")
	}
	return nil
}

// ValidateLoadAssignment accepts socket-address endpoints.
func ValidateLoadAssignment(cla *endpointv3.ClusterLoadAssignment) error {
	for _, loc := range cla.GetEndpoints() {
		for _, lbe := range loc.GetLbEndpoints() {
			sa := lbe.GetEndpoint().GetAddress().GetSocketAddress()
			if sa == nil {
				return fmt.Errorf("cluster_load_assignment %q: endpoints other than socket addresses are not supported", cla.GetClusterName())
			}
			if sa.GetNamedPort() != "" {
				return fmt.Errorf("cluster_load_assignment %q: named ports are not supported", cla.GetClusterName())
			}
		}
	}
	return nil
}
