// Package l7 serves the HTTP listeners of fleetlb-proxy: HTTP/1.1 and h2c on the
// plain listener, TLS with SNI-selected filter chains and ALPN (h2, http/1.1) on the
// HTTPS listener, routing by RDS as Envoy matches it, and forwarding to clusters of
// the upstream manager (HTTP/1.1 or h2c, so gRPC passes through). Validation accepts
// exactly the subset of Envoy's configuration it implements; anything else is an
// error naming the field, which the proxy NACKs.
package l7

import (
	"crypto/tls"
	"fmt"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/fleetlb/fleetlb/internal/proxy/pbcheck"
)

// Names as Envoy registers them.
const (
	HCMFilter          = "envoy.filters.network.http_connection_manager"
	RouterFilter       = "envoy.filters.http.router"
	TLSInspectorFilter = "envoy.filters.listener.tls_inspector"
	TLSTransportSocket = "envoy.transport_sockets.tls"
)

// Envoy's defaults for what the HCM leaves unset.
const (
	defaultIdleTimeout       = time.Hour
	defaultRouteTimeout      = 15 * time.Second
	defaultStreamIdleTimeout = 5 * time.Minute
	defaultMaxHeadersKB      = 60
	defaultMaxHeadersCount   = 100
)

// hcmLimits are the connection manager's timeouts and limits. One http.Server
// serves all of a listener's filter chains, so they must agree on them.
type hcmLimits struct {
	// idle is common_http_protocol_options.idle_timeout: a connection without
	// active requests is closed (HTTP/2: GOAWAY first). 0 disables.
	idle time.Duration
	// requestHeaders is request_headers_timeout: the whole request headers must
	// arrive within it, else the connection is closed. 0 disables.
	requestHeaders time.Duration
	// streamIdle is stream_idle_timeout: a request with no activity either way
	// for this long ends with 408 (504 once the whole request had arrived), or
	// a reset once the response has begun. 0 disables.
	streamIdle time.Duration
	// request is request_timeout: the whole request must be received (or the
	// response begun) within it, else 408. 0 disables.
	request time.Duration
	// maxHeadersKB and maxHeadersCount are max_request_headers_kb and
	// common_http_protocol_options.max_headers_count: 431 beyond them.
	maxHeadersKB, maxHeadersCount uint32
	// http2_protocol_options; 0 keeps net/http's defaults (250 streams, 1 MiB
	// windows), which are stricter than Envoy's unset values.
	h2MaxStreams, h2StreamWindow, h2ConnWindow uint32
}

var hcmType = "type.googleapis.com/" + string((&hcmv3.HttpConnectionManager{}).ProtoReflect().Descriptor().FullName())

// IsHTTPListener reports whether l's filter chains run the HTTP connection manager.
func IsHTTPListener(l *listenerv3.Listener) bool {
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			if f.GetName() == HCMFilter || f.GetTypedConfig().GetTypeUrl() == hcmType {
				return true
			}
		}
	}
	return false
}

// RouteConfigNames lists the RDS names the listener's chains use.
func RouteConfigNames(l *listenerv3.Listener) []string {
	var out []string
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			m := &hcmv3.HttpConnectionManager{}
			if f.GetTypedConfig().UnmarshalTo(m) == nil && m.GetRds() != nil && !slices.Contains(out, m.GetRds().GetRouteConfigName()) {
				out = append(out, m.GetRds().GetRouteConfigName())
			}
		}
	}
	return out
}

// SecretNames lists the SDS names the listener's chains use.
func SecretNames(l *listenerv3.Listener) []string {
	var out []string
	for _, fc := range l.GetFilterChains() {
		ctx := &tlsv3.DownstreamTlsContext{}
		if fc.GetTransportSocket().GetTypedConfig().UnmarshalTo(ctx) != nil {
			continue
		}
		for _, s := range ctx.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs() {
			if !slices.Contains(out, s.GetName()) {
				out = append(out, s.GetName())
			}
		}
	}
	return out
}

// listenerConfig is a validated HTTP listener.
type listenerConfig struct {
	name   string
	tls    bool
	chains []*filterChain
	limits hcmLimits
	// retryBuffer bounds the request body kept for retries: Envoy buffers
	// up to the listener's per_connection_buffer_limit_bytes (1 MiB unset).
	retryBuffer int
}

// filterChain is one filter chain: the SNI names it serves (none: any), its TLS
// certificates by SDS name and ALPN, and its HTTP connection manager.
type filterChain struct {
	name        string
	serverNames []string
	secrets     []string
	alpn        []string
	routeConfig string
	statPrefix  string
	// useRemoteAddress makes the client's address the trusted one appended to
	// X-Forwarded-For (Envoy at the edge).
	useRemoteAddress bool
	normalizePath    bool
	stripPort        bool
}

func parseListener(l *listenerv3.Listener) (*listenerConfig, error) {
	where := fmt.Sprintf("listener %q", l.GetName())
	if err := pbcheck.Unsupported(where, l, "name", "address", "filter_chains", "listener_filters", "per_connection_buffer_limit_bytes"); err != nil {
		return nil, err
	}
	if err := pbcheck.BufferLimit(where, l.GetPerConnectionBufferLimitBytes()); err != nil {
		return nil, err
	}
	cfg := &listenerConfig{name: l.GetName(), retryBuffer: 1 << 20}
	if v := l.GetPerConnectionBufferLimitBytes(); v != nil {
		cfg.retryBuffer = int(v.GetValue())
	}
	inspector := false
	for i, lf := range l.GetListenerFilters() {
		w := fmt.Sprintf("%s: listener_filters[%d]", where, i)
		if lf.GetName() != TLSInspectorFilter {
			return nil, fmt.Errorf("%s: filter %q is not supported (only %s)", w, lf.GetName(), TLSInspectorFilter)
		}
		if err := pbcheck.Unsupported(w, lf, "name", "typed_config"); err != nil {
			return nil, err
		}
		if tc := lf.GetTypedConfig(); tc != nil {
			ti := &tlsinspectorv3.TlsInspector{}
			if err := tc.UnmarshalTo(ti); err != nil {
				return nil, fmt.Errorf("%s: typed_config: %w", w, err)
			}
			if err := pbcheck.Unsupported(w+": typed_config", ti); err != nil {
				return nil, err
			}
		}
		inspector = true
	}
	if len(l.GetFilterChains()) == 0 {
		return nil, fmt.Errorf("%s: filter_chains is empty", where)
	}
	seen := map[string]int{}
	for i, fc := range l.GetFilterChains() {
		c, err := parseFilterChain(fmt.Sprintf("%s: filter_chains[%d]", where, i), fc)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			cfg.tls = len(c.secrets) > 0
			cfg.limits = c.limits
		} else if cfg.tls != (len(c.secrets) > 0) {
			return nil, fmt.Errorf("%s: filter_chains[%d]: mixing TLS and plaintext chains in one listener is not supported", where, i)
		} else if c.limits != cfg.limits {
			return nil, fmt.Errorf("%s: filter_chains[%d]: timeouts and limits of the http_connection_manager differ from filter_chains[0]; different ones per filter chain are not supported", where, i)
		}
		names := c.serverNames
		if len(names) == 0 {
			names = []string{""}
		}
		for _, n := range names {
			if j, dup := seen[n]; dup {
				return nil, fmt.Errorf("%s: filter_chains[%d]: server name %q is already matched by filter_chains[%d]", where, i, n, j)
			}
			seen[n] = i
		}
		cfg.chains = append(cfg.chains, c.filterChain)
	}
	if !cfg.tls && len(cfg.chains) > 1 {
		return nil, fmt.Errorf("%s: several plaintext filter chains are not supported", where)
	}
	if cfg.tls && !inspector && (len(cfg.chains) > 1 || len(cfg.chains[0].serverNames) > 0) {
		return nil, fmt.Errorf("%s: server_names need the %s listener filter", where, TLSInspectorFilter)
	}
	return cfg, nil
}

type parsedChain struct {
	*filterChain
	limits hcmLimits
}

func parseFilterChain(where string, fc *listenerv3.FilterChain) (*parsedChain, error) {
	if err := pbcheck.Unsupported(where, fc, "name", "filter_chain_match", "filters", "transport_socket"); err != nil {
		return nil, err
	}
	c := &filterChain{name: fc.GetName()}
	if m := fc.GetFilterChainMatch(); m != nil {
		if err := pbcheck.Unsupported(where+": filter_chain_match", m, "server_names"); err != nil {
			return nil, err
		}
		for _, n := range m.GetServerNames() {
			c.serverNames = append(c.serverNames, strings.ToLower(n))
		}
	}
	if ts := fc.GetTransportSocket(); ts != nil {
		if err := parseDownstreamTLS(where+": transport_socket", ts, c); err != nil {
			return nil, err
		}
	} else if len(c.serverNames) > 0 {
		return nil, fmt.Errorf("%s: filter_chain_match.server_names without a TLS transport socket", where)
	}
	if len(fc.GetFilters()) != 1 {
		return nil, fmt.Errorf("%s: filters: exactly one filter (%s) is supported, got %d", where, HCMFilter, len(fc.GetFilters()))
	}
	f := fc.GetFilters()[0]
	fw := where + ": filters[0]"
	if err := pbcheck.Unsupported(fw, f, "name", "typed_config"); err != nil {
		return nil, err
	}
	hcm := &hcmv3.HttpConnectionManager{}
	if err := unmarshal(f.GetTypedConfig(), hcm); err != nil {
		return nil, fmt.Errorf("%s: typed_config: %w", fw, err)
	}
	limits, err := parseHCM(fw+": typed_config", hcm, c)
	if err != nil {
		return nil, err
	}
	return &parsedChain{filterChain: c, limits: limits}, nil
}

func parseHCM(where string, m *hcmv3.HttpConnectionManager, c *filterChain) (hcmLimits, error) {
	if err := pbcheck.Unsupported(where, m, "stat_prefix", "codec_type", "rds", "http_filters",
		"use_remote_address", "normalize_path", "common_http_protocol_options", "strip_any_host_port",
		"request_headers_timeout", "stream_idle_timeout", "request_timeout", "max_request_headers_kb",
		"http2_protocol_options"); err != nil {
		return hcmLimits{}, err
	}
	limits, err := parseLimits(where, m)
	if err != nil {
		return hcmLimits{}, err
	}
	if m.GetCodecType() != hcmv3.HttpConnectionManager_AUTO {
		return hcmLimits{}, fmt.Errorf("%s: codec_type %s is not supported (only AUTO)", where, m.GetCodecType())
	}
	rds := m.GetRds()
	if rds == nil {
		return hcmLimits{}, fmt.Errorf("%s: rds is required (inline route_config is not supported)", where)
	}
	if err := pbcheck.Unsupported(where+": rds", rds, "config_source", "route_config_name"); err != nil {
		return hcmLimits{}, err
	}
	if err := adsOnly(where+": rds.config_source", rds.GetConfigSource()); err != nil {
		return hcmLimits{}, err
	}
	if rds.GetRouteConfigName() == "" {
		return hcmLimits{}, fmt.Errorf("%s: rds.route_config_name is empty", where)
	}
	c.routeConfig = rds.GetRouteConfigName()
	c.statPrefix = m.GetStatPrefix()
	hf := m.GetHttpFilters()
	if len(hf) != 1 || hf[0].GetName() != RouterFilter {
		return hcmLimits{}, fmt.Errorf("%s: http_filters must be exactly [%s]", where, RouterFilter)
	}
	if err := pbcheck.Unsupported(where+": http_filters[0]", hf[0], "name", "typed_config"); err != nil {
		return hcmLimits{}, err
	}
	if tc := hf[0].GetTypedConfig(); tc != nil {
		r := &routerv3.Router{}
		if err := tc.UnmarshalTo(r); err != nil {
			return hcmLimits{}, fmt.Errorf("%s: http_filters[0].typed_config: %w", where, err)
		}
		if err := pbcheck.Unsupported(where+": http_filters[0].typed_config", r); err != nil {
			return hcmLimits{}, err
		}
	}
	c.useRemoteAddress = m.GetUseRemoteAddress().GetValue()
	c.normalizePath = m.GetNormalizePath().GetValue()
	c.stripPort = m.GetStripAnyHostPort()
	return limits, nil
}

// parseLimits reads the timeouts and limits with Envoy's defaults for unset fields.
func parseLimits(where string, m *hcmv3.HttpConnectionManager) (hcmLimits, error) {
	l := hcmLimits{idle: defaultIdleTimeout, streamIdle: defaultStreamIdleTimeout,
		maxHeadersKB: defaultMaxHeadersKB, maxHeadersCount: defaultMaxHeadersCount}
	dur := func(field string, d *durationpb.Duration, into *time.Duration) error {
		if d == nil {
			return nil
		}
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return fmt.Errorf("%s: %s: %v is not a valid duration", where, field, d)
		}
		*into = d.AsDuration() // 0 disables, as in Envoy
		return nil
	}
	if err := dur("request_headers_timeout", m.GetRequestHeadersTimeout(), &l.requestHeaders); err != nil {
		return l, err
	}
	if err := dur("stream_idle_timeout", m.GetStreamIdleTimeout(), &l.streamIdle); err != nil {
		return l, err
	}
	if err := dur("request_timeout", m.GetRequestTimeout(), &l.request); err != nil {
		return l, err
	}
	if v := m.GetMaxRequestHeadersKb(); v != nil {
		if v.GetValue() == 0 || v.GetValue() > 8192 {
			return l, fmt.Errorf("%s: max_request_headers_kb %d is out of range (1-8192)", where, v.GetValue())
		}
		l.maxHeadersKB = v.GetValue()
	}
	if o := m.GetCommonHttpProtocolOptions(); o != nil {
		ow := where + ": common_http_protocol_options"
		if err := pbcheck.Unsupported(ow, o, "idle_timeout", "max_headers_count"); err != nil {
			return l, err
		}
		if err := dur("common_http_protocol_options.idle_timeout", o.GetIdleTimeout(), &l.idle); err != nil {
			return l, err
		}
		if v := o.GetMaxHeadersCount(); v != nil {
			if v.GetValue() == 0 {
				return l, fmt.Errorf("%s: max_headers_count must be at least 1", ow)
			}
			l.maxHeadersCount = v.GetValue()
		}
	}
	if h2 := m.GetHttp2ProtocolOptions(); h2 != nil {
		hw := where + ": http2_protocol_options"
		if err := pbcheck.Unsupported(hw, h2, "max_concurrent_streams", "initial_stream_window_size", "initial_connection_window_size"); err != nil {
			return l, err
		}
		const maxInt31 = 1<<31 - 1
		if v := h2.GetMaxConcurrentStreams(); v != nil {
			if v.GetValue() < 1 || v.GetValue() > maxInt31 {
				return l, fmt.Errorf("%s: max_concurrent_streams %d is out of range (1-%d)", hw, v.GetValue(), maxInt31)
			}
			l.h2MaxStreams = v.GetValue()
		}
		for _, w := range []struct {
			name string
			v    *wrapperspb.UInt32Value
			into *uint32
		}{{"initial_stream_window_size", h2.GetInitialStreamWindowSize(), &l.h2StreamWindow}, {"initial_connection_window_size", h2.GetInitialConnectionWindowSize(), &l.h2ConnWindow}} {
			if w.v == nil {
				continue
			}
			if w.v.GetValue() < 65535 || w.v.GetValue() > maxInt31 {
				return l, fmt.Errorf("%s: %s %d is out of range (65535-%d)", hw, w.name, w.v.GetValue(), maxInt31)
			}
			*w.into = w.v.GetValue()
		}
	}
	return l, nil
}

func parseDownstreamTLS(where string, ts *corev3.TransportSocket, c *filterChain) error {
	if ts.GetName() != TLSTransportSocket {
		return fmt.Errorf("%s: %q is not supported (only %s)", where, ts.GetName(), TLSTransportSocket)
	}
	if err := pbcheck.Unsupported(where, ts, "name", "typed_config"); err != nil {
		return err
	}
	ctx := &tlsv3.DownstreamTlsContext{}
	if err := unmarshal(ts.GetTypedConfig(), ctx); err != nil {
		return fmt.Errorf("%s: typed_config: %w", where, err)
	}
	w := where + ": typed_config"
	if err := pbcheck.Unsupported(w, ctx, "common_tls_context"); err != nil {
		return err
	}
	common := ctx.GetCommonTlsContext()
	if err := pbcheck.Unsupported(w+".common_tls_context", common, "alpn_protocols", "tls_certificate_sds_secret_configs"); err != nil {
		return err
	}
	for i, s := range common.GetTlsCertificateSdsSecretConfigs() {
		sw := fmt.Sprintf("%s.common_tls_context.tls_certificate_sds_secret_configs[%d]", w, i)
		if err := pbcheck.Unsupported(sw, s, "name", "sds_config"); err != nil {
			return err
		}
		if err := adsOnly(sw+".sds_config", s.GetSdsConfig()); err != nil {
			return err
		}
		if s.GetName() == "" {
			return fmt.Errorf("%s: name is empty", sw)
		}
		c.secrets = append(c.secrets, s.GetName())
	}
	if len(c.secrets) == 0 {
		return fmt.Errorf("%s.common_tls_context: tls_certificate_sds_secret_configs is empty (inline certificates are not supported)", w)
	}
	for _, p := range common.GetAlpnProtocols() {
		if p != "h2" && p != "http/1.1" {
			return fmt.Errorf("%s.common_tls_context.alpn_protocols: %q is not supported (h2, http/1.1)", w, p)
		}
	}
	c.alpn = common.GetAlpnProtocols()
	return nil
}

func adsOnly(where string, cs *corev3.ConfigSource) error {
	if cs.GetAds() == nil {
		return fmt.Errorf("%s: only ads is supported", where)
	}
	if err := pbcheck.Unsupported(where, cs, "ads", "resource_api_version"); err != nil {
		return err
	}
	if cs.GetResourceApiVersion() != corev3.ApiVersion_V3 {
		return fmt.Errorf("%s: resource_api_version must be V3", where)
	}
	return nil
}

// unmarshal decodes a typed_config that must hold exactly m's type.
func unmarshal(a *anypb.Any, m proto.Message) error {
	if a == nil {
		return fmt.Errorf("is required")
	}
	return a.UnmarshalTo(m)
}

// ParseSecret validates an SDS secret and returns its certificate: a
// tls_certificate with an inline PEM chain and key, nothing else.
func ParseSecret(s *tlsv3.Secret) (*tls.Certificate, error) {
	where := fmt.Sprintf("secret %q", s.GetName())
	if err := pbcheck.Unsupported(where, s, "name", "tls_certificate"); err != nil {
		return nil, err
	}
	tc := s.GetTlsCertificate()
	if tc == nil {
		return nil, fmt.Errorf("%s: tls_certificate is required", where)
	}
	if err := pbcheck.Unsupported(where+": tls_certificate", tc, "certificate_chain", "private_key"); err != nil {
		return nil, err
	}
	chain, err := inline(where+": tls_certificate.certificate_chain", tc.GetCertificateChain())
	if err != nil {
		return nil, err
	}
	key, err := inline(where+": tls_certificate.private_key", tc.GetPrivateKey())
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(chain, key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return &cert, nil
}

func inline(where string, ds *corev3.DataSource) ([]byte, error) {
	switch {
	case ds == nil:
		return nil, fmt.Errorf("%s is required", where)
	case ds.GetInlineBytes() != nil:
		return ds.GetInlineBytes(), nil
	case ds.GetInlineString() != "":
		return []byte(ds.GetInlineString()), nil
	}
	return nil, fmt.Errorf("%s: only inline_bytes and inline_string are supported", where)
}
