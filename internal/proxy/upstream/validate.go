package upstream

import (
	"fmt"
	"math/rand/v2"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	proxyprotocolv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/proxy_protocol/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

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
	for i, hc := range c.GetHealthChecks() {
		if err := validateHealthCheck(fmt.Sprintf("cluster %q: health_checks[%d]", c.GetName(), i), hc); err != nil {
			return err
		}
	}
	if od := c.GetOutlierDetection(); od != nil {
		if err := validateOutlier(fmt.Sprintf("cluster %q: outlier_detection", c.GetName()), od); err != nil {
			return err
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

// validateHealthCheck accepts a TCP connect check or an HTTP GET check with
// the interval fields Envoy schedules by (see cluster.healthCheck).
func validateHealthCheck(where string, hc *corev3.HealthCheck) error {
	if err := pbcheck.Unsupported(where, hc, "timeout", "interval", "initial_jitter", "interval_jitter", "interval_jitter_percent",
		"unhealthy_threshold", "healthy_threshold", "no_traffic_interval", "no_traffic_healthy_interval",
		"unhealthy_interval", "unhealthy_edge_interval", "healthy_edge_interval", "tcp_health_check", "http_health_check"); err != nil {
		return err
	}
	if hc.GetTimeout() == nil || hc.GetInterval() == nil || hc.GetUnhealthyThreshold() == nil || hc.GetHealthyThreshold() == nil {
		return fmt.Errorf("%s: timeout, interval, unhealthy_threshold and healthy_threshold are required", where)
	}
	if hc.GetTimeout().AsDuration() <= 0 || hc.GetInterval().AsDuration() <= 0 {
		return fmt.Errorf("%s: timeout and interval must be positive", where)
	}
	switch {
	case hc.GetTcpHealthCheck() != nil:
		if err := pbcheck.Unsupported(where+": tcp_health_check", hc.GetTcpHealthCheck()); err != nil {
			return err
		}
	case hc.GetHttpHealthCheck() != nil:
		h := hc.GetHttpHealthCheck()
		if err := pbcheck.Unsupported(where+": http_health_check", h, "host", "path", "expected_statuses", "codec_client_type"); err != nil {
			return err
		}
		if h.GetCodecClientType() != typev3.CodecClientType_HTTP1 && h.GetCodecClientType() != typev3.CodecClientType_HTTP2 {
			return fmt.Errorf("%s: http_health_check: codec_client_type %s is not supported", where, h.GetCodecClientType())
		}
	default:
		return fmt.Errorf("%s: health check kind other than tcp_health_check and http_health_check is not supported", where)
	}
	return nil
}

// validateOutlier accepts consecutive-error ejection (5xx, and local-origin
// failures when they are split out). Success-rate, failure-percentage and
// gateway-failure ejection are not implemented, so their enforcement must be
// off: enforcing_success_rate (and enforcing_local_origin_success_rate with
// split errors) default to 100 in Envoy and must be set to 0.
func validateOutlier(where string, od *clusterv3.OutlierDetection) error {
	if err := pbcheck.Unsupported(where, od, "consecutive_5xx", "interval", "base_ejection_time", "max_ejection_time", "max_ejection_time_jitter",
		"max_ejection_percent", "enforcing_consecutive_5xx", "split_external_local_origin_errors", "consecutive_local_origin_failure",
		"enforcing_consecutive_local_origin_failure", "enforcing_success_rate", "enforcing_local_origin_success_rate",
		"enforcing_consecutive_gateway_failure", "enforcing_failure_percentage", "enforcing_failure_percentage_local_origin",
		"successful_active_health_check_uneject_host"); err != nil {
		return err
	}
	if od.GetEnforcingSuccessRate() == nil || od.GetEnforcingSuccessRate().GetValue() != 0 {
		return fmt.Errorf("%s: success-rate ejection is not supported: enforcing_success_rate must be set to 0", where)
	}
	if od.GetSplitExternalLocalOriginErrors() && (od.GetEnforcingLocalOriginSuccessRate() == nil || od.GetEnforcingLocalOriginSuccessRate().GetValue() != 0) {
		return fmt.Errorf("%s: local-origin success-rate ejection is not supported: enforcing_local_origin_success_rate must be set to 0", where)
	}
	for name, v := range map[string]*wrapperspb.UInt32Value{
		"enforcing_consecutive_gateway_failure": od.GetEnforcingConsecutiveGatewayFailure(), "enforcing_failure_percentage": od.GetEnforcingFailurePercentage(),
		"enforcing_failure_percentage_local_origin": od.GetEnforcingFailurePercentageLocalOrigin(),
	} {
		if v.GetValue() != 0 {
			return fmt.Errorf("%s: %s is not supported (only 0)", where, name)
		}
	}
	for name, v := range map[string]*wrapperspb.UInt32Value{
		"enforcing_consecutive_5xx": od.GetEnforcingConsecutive_5Xx(), "enforcing_consecutive_local_origin_failure": od.GetEnforcingConsecutiveLocalOriginFailure(),
		"max_ejection_percent": od.GetMaxEjectionPercent(),
	} {
		if v.GetValue() > 100 {
			return fmt.Errorf("%s: %s must be at most 100", where, name)
		}
	}
	if d := od.GetInterval(); d != nil && d.AsDuration() <= 0 {
		return fmt.Errorf("%s: interval must be positive", where)
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
// connection, pending-request, request and retry limits (max_retries, or a
// retry budget, which replaces it as in Envoy). The proxy routes every
// request at DEFAULT priority, so HIGH thresholds would never apply.
func validateCircuitBreakers(where string, cb *clusterv3.CircuitBreakers) error {
	if err := pbcheck.Unsupported(where, cb, "thresholds"); err != nil {
		return err
	}
	if len(cb.GetThresholds()) > 1 {
		return fmt.Errorf("%s: thresholds: only one (priority DEFAULT) is supported, got %d", where, len(cb.GetThresholds()))
	}
	for i, t := range cb.GetThresholds() {
		w := fmt.Sprintf("%s: thresholds[%d]", where, i)
		if err := pbcheck.Unsupported(w, t, "priority", "max_connections", "max_pending_requests", "max_requests", "max_retries", "retry_budget"); err != nil {
			return err
		}
		if rb := t.GetRetryBudget(); rb != nil {
			if err := pbcheck.Unsupported(w+": retry_budget", rb, "budget_percent", "min_retry_concurrency"); err != nil {
				return err
			}
			if p := rb.GetBudgetPercent(); p != nil && (p.GetValue() < 0 || p.GetValue() > 100) {
				return fmt.Errorf("%s: retry_budget.budget_percent must be 0-100", w)
			}
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
