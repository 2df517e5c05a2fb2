package upstream

import (
	"fmt"
	"math/rand/v2"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	proxyprotocolv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/proxy_protocol/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"

	"github.com/fleetlb/fleetlb/internal/proxy/pbcheck"
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
		if err := validateHTTPOptions(fmt.Sprintf("cluster %q: typed_extension_protocol_options[%q]", c.GetName(), name), &o); err != nil {
			return err
		}
	}
	if cb := c.GetCircuitBreakers(); cb != nil {
		if err := validateCircuitBreakers(fmt.Sprintf("cluster %q: circuit_breakers", c.GetName()), cb); err != nil {
			return err
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
	if err := pbcheck.BufferLimit(fmt.Sprintf("cluster %q", c.GetName()), c.GetPerConnectionBufferLimitBytes()); err != nil {
		return err
	}
	if c.GetLoadAssignment() != nil || c.GetDnsLookupFamily() != clusterv3.Cluster_AUTO {
		return bad("inline load_assignment or dns settings")
	}
	return nil
}

// validateHTTPOptions accepts an explicit HTTP/1.1 or HTTP/2 (h2c) upstream
// with default settings, and the upstream idle_timeout.
func validateHTTPOptions(where string, o *httpv3.HttpProtocolOptions) error {
	if err := pbcheck.Unsupported(where, o, "explicit_http_config", "common_http_protocol_options"); err != nil {
		return err
	}
	e := o.GetExplicitHttpConfig()
	switch {
	case e == nil:
		return fmt.Errorf("%s: explicit_http_config is required (auto and use_downstream_protocol are not supported)", where)
	case e.GetHttp2ProtocolOptions() != nil:
		if err := pbcheck.Unsupported(where+": explicit_http_config.http2_protocol_options", e.GetHttp2ProtocolOptions()); err != nil {
			return err
		}
	case e.GetHttpProtocolOptions() != nil:
		if err := pbcheck.Unsupported(where+": explicit_http_config.http_protocol_options", e.GetHttpProtocolOptions()); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%s: explicit_http_config: only http_protocol_options and http2_protocol_options are supported", where)
	}
	if co := o.GetCommonHttpProtocolOptions(); co != nil {
		if err := pbcheck.Unsupported(where+": common_http_protocol_options", co, "idle_timeout"); err != nil {
			return err
		}
	}
	return nil
}

// validateCircuitBreakers accepts one DEFAULT-priority threshold with the
// connection, pending-request and request limits. The proxy routes every
// request at DEFAULT priority, so HIGH thresholds would never apply; and it
// never retries, so max_retries and retry budgets have nothing to limit.
func validateCircuitBreakers(where string, cb *clusterv3.CircuitBreakers) error {
	if err := pbcheck.Unsupported(where, cb, "thresholds"); err != nil {
		return err
	}
	if len(cb.GetThresholds()) > 1 {
		return fmt.Errorf("%s: thresholds: only one (priority DEFAULT) is supported, got %d", where, len(cb.GetThresholds()))
	}
	for i, t := range cb.GetThresholds() {
		w := fmt.Sprintf("%s: thresholds[%d]", where, i)
		if err := pbcheck.Unsupported(w, t, "priority", "max_connections", "max_pending_requests", "max_requests"); err != nil {
			return err
		}
		if t.GetPriority() != corev3.RoutingPriority_DEFAULT {
			return fmt.Errorf("%s: priority %s is not supported (only DEFAULT)", w, t.GetPriority())
		}
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
