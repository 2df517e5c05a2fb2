package l7

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/go-logr/logr"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/fleetlb/fleetlb/internal/proxy/upstream"
)

func hcm(t *testing.T, mut func(*hcmv3.HttpConnectionManager)) *listenerv3.Filter {
	t.Helper()
	m := &hcmv3.HttpConnectionManager{
		StatPrefix: "http",
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: "http",
			ConfigSource:    &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: RouterFilter}},
	}
	if mut != nil {
		mut(m)
	}
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return &listenerv3.Filter{Name: HCMFilter, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}
}

func sdsChain(t *testing.T, names []string, secret string) *listenerv3.FilterChain {
	t.Helper()
	ctx := &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		AlpnProtocols: []string{"h2", "http/1.1"},
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: secret, SdsConfig: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3}}},
	}}
	a, err := anypb.New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fc := &listenerv3.FilterChain{Name: secret, Filters: []*listenerv3.Filter{hcm(t, nil)},
		TransportSocket: &corev3.TransportSocket{Name: TLSTransportSocket, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}}
	if len(names) > 0 {
		fc.FilterChainMatch = &listenerv3.FilterChainMatch{ServerNames: names}
	}
	return fc
}

func TestListenerValidationNamesTheField(t *testing.T) {
	cases := []struct {
		name string
		l    func(t *testing.T) *listenerv3.Listener
		want string
	}{
		{"inline route config", func(t *testing.T) *listenerv3.Listener {
			return &listenerv3.Listener{Name: "http", FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{hcm(t, func(m *hcmv3.HttpConnectionManager) {
				m.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{}}
			})}}}}
		}, "field route_config is not supported"},
		{"unknown hcm field", func(t *testing.T) *listenerv3.Listener {
			return &listenerv3.Listener{Name: "http", FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{hcm(t, func(m *hcmv3.HttpConnectionManager) {
				m.ServerName = "x"
			})}}}}
		}, "field server_name is not supported"},
		{"extra http filter", func(t *testing.T) *listenerv3.Listener {
			return &listenerv3.Listener{Name: "http", FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{hcm(t, func(m *hcmv3.HttpConnectionManager) {
				m.HttpFilters = append([]*hcmv3.HttpFilter{{Name: "envoy.filters.http.cors"}}, m.HttpFilters...)
			})}}}}
		}, "http_filters must be exactly"},
		{"codec", func(t *testing.T) *listenerv3.Listener {
			return &listenerv3.Listener{Name: "http", FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{hcm(t, func(m *hcmv3.HttpConnectionManager) {
				m.CodecType = hcmv3.HttpConnectionManager_HTTP3
			})}}}}
		}, "codec_type HTTP3 is not supported"},
		{"duplicate server name", func(t *testing.T) *listenerv3.Listener {
			return &listenerv3.Listener{Name: "https", FilterChains: []*listenerv3.FilterChain{
				sdsChain(t, []string{"a.example.com"}, "a"), sdsChain(t, []string{"a.example.com"}, "b")}}
		}, `server name "a.example.com" is already matched by filter_chains[0]`},
		{"listener field", func(t *testing.T) *listenerv3.Listener {
			return &listenerv3.Listener{Name: "http", PerConnectionBufferLimitBytes: wrapperspb.UInt32(1), FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{hcm(t, nil)}}}}
		}, "per_connection_buffer_limit_bytes 1 is below 32768"},
		{"unsupported hcm timeout", func(t *testing.T) *listenerv3.Listener {
			return &listenerv3.Listener{Name: "http", FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{hcm(t, func(m *hcmv3.HttpConnectionManager) {
				m.DrainTimeout = durationpb.New(time.Second)
			})}}}}
		}, "field drain_timeout is not supported"},
		{"unsupported http2 option", func(t *testing.T) *listenerv3.Listener {
			return &listenerv3.Listener{Name: "http", FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{hcm(t, func(m *hcmv3.HttpConnectionManager) {
				m.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{AllowConnect: true}
			})}}}}
		}, "http2_protocol_options: field allow_connect is not supported"},
		{"headers kb out of range", func(t *testing.T) *listenerv3.Listener {
			return &listenerv3.Listener{Name: "http", FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{hcm(t, func(m *hcmv3.HttpConnectionManager) {
				m.MaxRequestHeadersKb = wrapperspb.UInt32(9000)
			})}}}}
		}, "max_request_headers_kb 9000 is out of range"},
		{"headers_with_underscores_action", func(t *testing.T) *listenerv3.Listener {
			return &listenerv3.Listener{Name: "http", FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{hcm(t, func(m *hcmv3.HttpConnectionManager) {
				m.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{HeadersWithUnderscoresAction: corev3.HttpProtocolOptions_REJECT_REQUEST}
			})}}}}
		}, "field headers_with_underscores_action is not supported"},
		{"negative timeout", func(t *testing.T) *listenerv3.Listener {
			return &listenerv3.Listener{Name: "http", FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{hcm(t, func(m *hcmv3.HttpConnectionManager) {
				m.StreamIdleTimeout = &durationpb.Duration{Seconds: -1}
			})}}}}
		}, "stream_idle_timeout"},
		{"chains with different limits", func(t *testing.T) *listenerv3.Listener {
			b := sdsChain(t, []string{"b.example.com"}, "b")
			b.Filters = []*listenerv3.Filter{hcm(t, func(m *hcmv3.HttpConnectionManager) { m.StreamIdleTimeout = durationpb.New(time.Second) })}
			return &listenerv3.Listener{Name: "https", ListenerFilters: []*listenerv3.ListenerFilter{{Name: TLSInspectorFilter}},
				FilterChains: []*listenerv3.FilterChain{sdsChain(t, []string{"a.example.com"}, "a"), b}}
		}, "timeouts and limits of the http_connection_manager differ from filter_chains[0]"},
	}
	for _, tc := range cases {
		_, err := NewListener(tc.l(t), Deps{Routes: func(string) *RouteTable { return nil }, Secrets: func(string) *tls.Certificate { return nil }, Upstreams: nopUpstreams{}}, logr.Discard())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to contain %q", tc.name, err, tc.want)
		}
	}
}

type nopUpstreams struct{}

func (nopUpstreams) PickFor(string, []byte, *upstream.Selection) (upstream.Attempt, error) {
	return upstream.Attempt{}, nil
}
func (nopUpstreams) Report(string, string, bool)       {}
func (nopUpstreams) ReportStatus(string, string, int)  {}
func (nopUpstreams) StartRetry(string) (func(), error) { return func() {}, nil }
func (nopUpstreams) Transport(string) (http.RoundTripper, error) {
	return http.DefaultTransport, nil
}
func (nopUpstreams) StartRequest(string) (func(), error) { return func() {}, nil }

func TestFilterChainBySNI(t *testing.T) {
	l, err := NewListener(&listenerv3.Listener{Name: "https", FilterChains: []*listenerv3.FilterChain{
		sdsChain(t, []string{"a.example.com"}, "exact"),
		sdsChain(t, []string{"*.example.com"}, "wild"),
		sdsChain(t, []string{"*.b.example.com"}, "wild-b"),
		sdsChain(t, nil, "default"),
	}, ListenerFilters: []*listenerv3.ListenerFilter{{Name: TLSInspectorFilter}}},
		Deps{Routes: func(string) *RouteTable { return nil }, Secrets: func(string) *tls.Certificate { return nil }, Upstreams: nopUpstreams{}}, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	for sni, want := range map[string]string{
		"a.example.com": "exact", "A.Example.com": "exact", "x.example.com": "wild", "x.y.example.com": "wild",
		"x.b.example.com": "wild-b", "example.com": "default", "": "default", "other.org": "default",
	} {
		if got := l.chain(sni); got == nil || got.name != want {
			t.Errorf("SNI %q: chain %v, want %s", sni, got, want)
		}
	}
}

func compile(t *testing.T, vhs ...*routev3.VirtualHost) *RouteTable {
	t.Helper()
	rt, err := CompileRouteConfig(&routev3.RouteConfiguration{Name: "http", VirtualHosts: vhs})
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

func vhost(name string, domains ...string) *routev3.VirtualHost {
	return &routev3.VirtualHost{Name: name, Domains: domains, Routes: []*routev3.Route{{Name: "r",
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: name}}}}}}
}

// Envoy's domain precedence: exact, longest suffix wildcard, longest prefix wildcard, "*".
func TestVirtualHostPrecedence(t *testing.T) {
	rt := compile(t, vhost("any", "*"), vhost("suffix", "*.example.com"), vhost("longer-suffix", "*.b.example.com"),
		vhost("exact", "a.example.com"), vhost("prefix", "www.*"), vhost("dash", "*-api.example.com"))
	for host, want := range map[string]string{
		"a.example.com": "exact", "x.example.com": "suffix", "x.b.example.com": "longer-suffix",
		"www.other.org": "prefix", "www.example.com": "suffix", "team-api.example.com": "dash",
		"example.com": "any", "other.org": "any",
	} {
		if vh := rt.virtualHost(host); vh == nil || vh.name != want {
			t.Errorf("host %q: %v, want %s", host, vh, want)
		}
	}
	if _, err := CompileRouteConfig(&routev3.RouteConfiguration{Name: "x", VirtualHosts: []*routev3.VirtualHost{vhost("a", "a.com"), vhost("b", "A.com")}}); err == nil ||
		!strings.Contains(err.Error(), `domain "a.com" is already used by virtual host "a"`) {
		t.Errorf("duplicate domain: %v", err)
	}
}

func TestRouteCompileNACKsUnsupported(t *testing.T) {
	withAction := func(mut func(*routev3.Route)) *routev3.RouteConfiguration {
		vh := vhost("a", "a.com")
		mut(vh.Routes[0])
		return &routev3.RouteConfiguration{Name: "http", VirtualHosts: []*routev3.VirtualHost{vh}}
	}
	cases := map[string]*routev3.RouteConfiguration{
		`retry_on "retriable-4xx" is not supported`: withAction(func(r *routev3.Route) {
			r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx,retriable-4xx"}
		}),
		"field retriable_headers is not supported": withAction(func(r *routev3.Route) {
			r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", RetriableHeaders: []*routev3.HeaderMatcher{{Name: "x"}}}
		}),
		`"envoy.retry_host_predicates.omit_canary_hosts" is not supported`: withAction(func(r *routev3.Route) {
			r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.omit_canary_hosts"}}}
		}),
		"direct_response.status 600 is not 200-599": withAction(func(r *routev3.Route) {
			r.Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 600}}
		}),
		"safe_regex: error parsing regexp": withAction(func(r *routev3.Route) {
			r.Match.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "(("}}
		}),
		"the total weight is 0": withAction(func(r *routev3.Route) {
			r.GetRoute().ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
				Clusters: []*routev3.WeightedCluster_ClusterWeight{{Name: "a", Weight: wrapperspb.UInt32(0)}}}}
		}),
		`header ":path" cannot be removed`: withAction(func(r *routev3.Route) { r.RequestHeadersToRemove = []string{":path"} }),
	}
	for want, rc := range cases {
		if _, err := CompileRouteConfig(rc); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want it to contain %q", err, want)
		}
	}
}

func TestRedirectLocation(t *testing.T) {
	prefixMatch := &routeMatch{kind: "separated", value: "/old"}
	cases := []struct {
		name string
		ra   redirectAction
		url  string
		tls  bool
		want string
	}{
		{"https keeps a non-default port", redirectAction{scheme: "https"}, "http://a.com:8080/p?q=1", false, "https://a.com:8080/p?q=1"},
		{"https drops port 80", redirectAction{scheme: "https"}, "http://a.com:80/p", false, "https://a.com/p"},
		{"host drops the port", redirectAction{host: "b.com"}, "http://a.com:8080/p", false, "http://b.com/p"},
		{"port replaces", redirectAction{port: 9000}, "http://a.com:8080/p", false, "http://a.com:9000/p"},
		{"path replaces, query kept", redirectAction{path: "/new"}, "http://a.com/p?q=1", false, "http://a.com/new?q=1"},
		{"strip query", redirectAction{path: "/new", stripQuery: true}, "http://a.com/p?q=1", false, "http://a.com/new"},
		{"prefix rewrite", redirectAction{prefixRewrite: "/new"}, "http://a.com/old/x", false, "http://a.com/new/x"},
		{"https to http on 443", redirectAction{scheme: "http"}, "https://a.com:443/p", true, "http://a.com/p"},
	}
	for _, tc := range cases {
		r := httptest.NewRequest(http.MethodGet, tc.url, nil)
		if !tc.tls {
			r.TLS = nil
		}
		if got := tc.ra.location(r, prefixMatch, r.URL.EscapedPath()); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestRewriteAndNormalize(t *testing.T) {
	rt := compile(t, &routev3.VirtualHost{Name: "a", Domains: []string{"a.com"}, Routes: []*routev3.Route{{Name: "r",
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "a"},
			Timeout:      durationpb.New(0),
			RegexRewrite: &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: "^/v([0-9])/(.*)$"}, Substitution: `/api/\2?v=\1&cost=$5`}}}}}})
	fa := rt.exact["a.com"].routes[0].forward
	if fa.timeout != 0 {
		t.Errorf("timeout 0s must disable the route timeout, got %v", fa.timeout)
	}
	if got := fa.rewritePath(&routeMatch{kind: "prefix", value: "/"}, "/v2/users"); got != "/api/users?v=2&cost=$5" {
		t.Errorf("regex rewrite: %q", got)
	}
	for in, want := range map[string]string{"/a/./b": "/a/b", "/a/../b": "/b", "/../a": "/a", "/a/b/": "/a/b/", "/a/b/..": "/a/", "/plain": "/plain"} {
		if got := normalizePath(in); got != want {
			t.Errorf("normalize %q: %q, want %q", in, got, want)
		}
	}
}

// TestSetUpdatesOnlyWhatChanged: UpdateRouteConfigs compiles the changed route
// configurations, drops the removed ones and leaves the others; an invalid one
// changes nothing. Virtual hosts with equal retry policies share the compiled one.
func TestSetUpdatesOnlyWhatChanged(t *testing.T) {
	s := NewSet(nil)
	rc := func(name string, vhs ...*routev3.VirtualHost) *routev3.RouteConfiguration {
		return &routev3.RouteConfiguration{Name: name, VirtualHosts: vhs}
	}
	if err := s.UpdateRouteConfigs([]*routev3.RouteConfiguration{rc("a", vhost("a", "a.com")), rc("b", vhost("b", "b.com"))}, nil); err != nil {
		t.Fatal(err)
	}
	b := s.route("b")
	if err := s.UpdateRouteConfigs([]*routev3.RouteConfiguration{rc("c", vhost("c", "c.com"))}, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	if s.route("a") != nil || s.route("b") != b || s.route("c") == nil {
		t.Errorf("after c added and a removed: a %v, b unchanged %v, c %v", s.route("a"), s.route("b") == b, s.route("c"))
	}
	bad := rc("b", vhost("x", "x.com"), vhost("y", "X.com"))
	if err := s.UpdateRouteConfigs([]*routev3.RouteConfiguration{bad}, []string{"c"}); err == nil {
		t.Fatal("a duplicate domain was accepted")
	}
	if s.route("b") != b || s.route("c") == nil {
		t.Error("a rejected update changed the set")
	}

	retry := &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(2)}
	v1, v2 := vhost("v1", "v1.com"), vhost("v2", "v2.com")
	v1.RetryPolicy, v2.RetryPolicy = retry, proto.Clone(retry).(*routev3.RetryPolicy)
	rt := compile(t, v1, v2)
	if p1, p2 := rt.virtualHost("v1.com").retry, rt.virtualHost("v2.com").retry; p1 == nil || p1 != p2 {
		t.Errorf("equal retry policies compiled apart: %p %p", p1, p2)
	}
}
