package translate

import (
	"cmp"
	"regexp"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	previousprioritiesv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/fleetlb/fleetlb/internal/model"
)

type l7Resources struct {
	listeners, routes, secrets []types.Resource
}

// httpResources builds the fleet's shared listeners, their two route
// configurations and the certificates.
func httpResources(f *model.Fleet) (*l7Resources, error) {
	out := &l7Resources{}
	vhosts := slices.Clone(f.VirtualHosts)
	slices.SortFunc(vhosts, func(a, b model.VirtualHost) int { return cmp.Compare(a.Name, b.Name) })

	if f.HTTP != nil {
		rc := &routev3.RouteConfiguration{Name: HTTPRouteName}
		for i := range vhosts {
			v := &vhosts[i]
			if v.Certificate != "" && v.RedirectToHTTPS {
				rc.VirtualHosts = append(rc.VirtualHosts, httpsRedirectHost(v, httpsPort(f)))
				continue
			}
			rc.VirtualHosts = append(rc.VirtualHosts, virtualHost(v))
		}
		out.routes = append(out.routes, rc)
		out.listeners = append(out.listeners, &listenerv3.Listener{
			Name:                          HTTPListenerName,
			Address:                       socketAddress(f.HTTP.VIP, f.HTTP.Port, false),
			FilterChains:                  []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{hcm(HTTPListenerName, HTTPRouteName)}}},
			PerConnectionBufferLimitBytes: wrapperspb.UInt32(connectionBufferLimit),
		})
	}

	if f.HTTPS != nil {
		// SNI → certificate: one filter chain per certificate that serves any
		// hostname, each with its own route configuration holding only the
		// virtual hosts of that certificate. A certificate belongs to one
		// tenant (or group), so a route configuration a proxy refuses holds
		// back that tenant's HTTPS changes, not everyone's; and a request can
		// only reach the virtual hosts of the certificate its TLS handshake chose.
		serverNames := map[string][]string{}
		rcs := map[string]*routev3.RouteConfiguration{}
		for i := range vhosts {
			v := &vhosts[i]
			if v.Certificate == "" {
				continue
			}
			serverNames[v.Certificate] = append(serverNames[v.Certificate], v.Hostnames...)
			rc := rcs[v.Certificate]
			if rc == nil {
				rc = &routev3.RouteConfiguration{Name: HTTPSRouteNameFor(v.Certificate)}
				rcs[v.Certificate] = rc
			}
			rc.VirtualHosts = append(rc.VirtualHosts, virtualHost(v))
		}
		certs := slices.Clone(f.Certificates)
		slices.SortFunc(certs, func(a, b model.Certificate) int { return cmp.Compare(a.Name, b.Name) })
		var chains []*listenerv3.FilterChain
		for _, c := range certs {
			names := serverNames[c.Name]
			if len(names) == 0 {
				continue // a certificate no virtual host uses is not served
			}
			slices.Sort(names)
			out.secrets = append(out.secrets, &tlsv3.Secret{Name: c.Name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
				CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte(c.CertPEM)}},
				PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte(c.KeyPEM)}},
			}}})
			out.routes = append(out.routes, rcs[c.Name])
			chains = append(chains, &listenerv3.FilterChain{
				Name:             c.Name,
				FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: slices.Compact(names)},
				TransportSocket: &corev3.TransportSocket{Name: TransportTLS, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: typed(&tlsv3.DownstreamTlsContext{
					CommonTlsContext: &tlsv3.CommonTlsContext{
						TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: c.Name, SdsConfig: adsSource()}},
						AlpnProtocols:                  []string{"h2", "http/1.1"},
					},
				})}},
				Filters: []*listenerv3.Filter{hcm(HTTPSListenerName, HTTPSRouteNameFor(c.Name))},
			})
		}
		// Envoy needs at least one filter chain; with no certificate in use
		// there is no HTTPS listener.
		if len(chains) > 0 {
			out.listeners = append(out.listeners, &listenerv3.Listener{
				Name:    HTTPSListenerName,
				Address: socketAddress(f.HTTPS.VIP, f.HTTPS.Port, false),
				ListenerFilters: []*listenerv3.ListenerFilter{{
					Name:       FilterTLSInspector,
					ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: typed(&tlsinspectorv3.TlsInspector{})},
				}},
				FilterChains:                  chains,
				PerConnectionBufferLimitBytes: wrapperspb.UInt32(connectionBufferLimit),
			})
		}
	}
	return out, nil
}

// HTTPSRouteNameFor is the route configuration of the HTTPS filter chain of a certificate.
func HTTPSRouteNameFor(certificate string) string { return HTTPSRouteName + "/" + certificate }

// Downstream HTTP limits of the shared listeners: Envoy's edge best practices
// (HTTP/2 limits, 32 KiB buffers), Contour's 60 s connection idle timeout, and
// Envoy's own defaults, written out, for the rest. README.md says why each.
const (
	requestHeadersTimeout     = 10 * time.Second
	streamIdleTimeout         = 5 * time.Minute
	downstreamIdleTimeout     = 60 * time.Second
	maxRequestHeadersKB       = 60
	maxHeadersCount           = 100
	http2MaxConcurrentStreams = 100
	http2StreamWindow         = 64 << 10
	http2ConnectionWindow     = 1 << 20
	connectionBufferLimit     = 32 << 10
)

func hcm(stat, routeName string) *listenerv3.Filter {
	m := &hcmv3.HttpConnectionManager{
		StatPrefix: stat,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: adsSource(), RouteConfigName: routeName,
		}},
		HttpFilters: []*hcmv3.HttpFilter{{
			Name: FilterRouter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: typed(&routerv3.Router{})},
		}},
		UseRemoteAddress: wrapperspb.Bool(true),
		NormalizePath:    wrapperspb.Bool(true),
		// Virtual hosts list bare hostnames; without this Envoy would match
		// "Host: a.example.com:8080" against no domain on a non-default port.
		StripPortMode: &hcmv3.HttpConnectionManager_StripAnyHostPort{StripAnyHostPort: true},
		// The listener is shared by every tenant: nobody may hold a connection
		// or a stream for free. No request_timeout: it would cut gRPC streams
		// and long downloads; stream_idle_timeout ends the ones that stall.
		RequestHeadersTimeout: durationpb.New(requestHeadersTimeout),
		StreamIdleTimeout:     durationpb.New(streamIdleTimeout),
		MaxRequestHeadersKb:   wrapperspb.UInt32(maxRequestHeadersKB),
		CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{
			IdleTimeout:     durationpb.New(downstreamIdleTimeout),
			MaxHeadersCount: wrapperspb.UInt32(maxHeadersCount),
		},
		Http2ProtocolOptions: &corev3.Http2ProtocolOptions{
			MaxConcurrentStreams:        wrapperspb.UInt32(http2MaxConcurrentStreams),
			InitialStreamWindowSize:     wrapperspb.UInt32(http2StreamWindow),
			InitialConnectionWindowSize: wrapperspb.UInt32(http2ConnectionWindow),
		},
	}
	return &listenerv3.Filter{Name: FilterHCM, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: typed(m)}}
}

// httpsPort is the port of the fleet's HTTPS listener, 0 without one.
func httpsPort(f *model.Fleet) uint16 {
	if f.HTTPS == nil {
		return 0
	}
	return f.HTTPS.Port
}

// httpsRedirectHost answers every request with a 301 to https on the fleet's
// HTTPS port: named in Location unless it is 443, so a fleet serving HTTPS
// elsewhere is reachable by following the redirect.
func httpsRedirectHost(v *model.VirtualHost, port uint16) *routev3.VirtualHost {
	var portRedirect uint32
	if port != 0 && port != 443 {
		portRedirect = uint32(port)
	}
	return &routev3.VirtualHost{
		Name:    v.Name,
		Domains: slices.Sorted(slices.Values(v.Hostnames)),
		Routes: []*routev3.Route{{
			Name:  "https-redirect",
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{
				SchemeRewriteSpecifier: &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true},
				PortRedirect:           portRedirect,
				ResponseCode:           routev3.RedirectAction_MOVED_PERMANENTLY,
			}},
		}},
	}
}

func virtualHost(v *model.VirtualHost) *routev3.VirtualHost {
	vh := &routev3.VirtualHost{Name: v.Name, Domains: slices.Sorted(slices.Values(v.Hostnames)), RetryPolicy: vhostRetryPolicy}
	for i := range v.Routes {
		vh.Routes = append(vh.Routes, route(&v.Routes[i]))
	}
	return vh
}

func stringMatcher(t model.StringMatchType, v string) *matcherv3.StringMatcher {
	if t == model.StringRegex {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: v}}}
	}
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v}}
}

func routeMatch(m *model.Match) *routev3.RouteMatch {
	rm := &routev3.RouteMatch{}
	switch m.PathType {
	case model.PathExact:
		rm.PathSpecifier = &routev3.RouteMatch_Path{Path: m.Path}
	case model.PathRegex:
		rm.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: m.Path}}
	case model.PathPrefix:
		// Gateway API and Ingress prefixes match whole path segments: /foo
		// matches /foo and /foo/bar but not /foobar.
		if m.Path == "/" || m.Path[len(m.Path)-1] == '/' {
			rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: m.Path}
		} else {
			rm.PathSpecifier = &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: m.Path}
		}
	default:
		rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/"}
	}
	if m.Method != "" {
		rm.Headers = append(rm.Headers, &routev3.HeaderMatcher{
			Name:                 ":method",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: stringMatcher(model.StringExact, m.Method)},
		})
	}
	for _, h := range m.Headers {
		rm.Headers = append(rm.Headers, &routev3.HeaderMatcher{
			Name:                 h.Name,
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: stringMatcher(h.Type, h.Value)},
		})
	}
	for _, q := range m.Query {
		rm.QueryParameters = append(rm.QueryParameters, &routev3.QueryParameterMatcher{
			Name:                         q.Name,
			QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: stringMatcher(q.Type, q.Value)},
		})
	}
	return rm
}

var redirectCodes = map[int]routev3.RedirectAction_RedirectResponseCode{
	0: routev3.RedirectAction_FOUND, 301: routev3.RedirectAction_MOVED_PERMANENTLY, 302: routev3.RedirectAction_FOUND,
	303: routev3.RedirectAction_SEE_OTHER, 307: routev3.RedirectAction_TEMPORARY_REDIRECT, 308: routev3.RedirectAction_PERMANENT_REDIRECT,
}

func route(r *model.Route) *routev3.Route {
	out := &routev3.Route{Name: r.Name, Match: routeMatch(&r.Match)}
	if r.Respond != nil {
		out.Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: uint32(r.Respond.Status)}}
		return out
	}
	if rd := r.Redirect; rd != nil {
		a := &routev3.RedirectAction{HostRedirect: rd.Host, PortRedirect: uint32(rd.Port), ResponseCode: redirectCodes[rd.StatusCode]}
		if rd.Scheme != "" {
			a.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: rd.Scheme}
		}
		switch {
		case rd.FullPath != "":
			a.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: rd.FullPath}
		case rd.PrefixPath != "":
			a.PathRewriteSpecifier = &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: rd.PrefixPath}
		}
		out.Action = &routev3.Route_Redirect{Redirect: a}
		return out
	}
	fw := r.Forward
	a := &routev3.RouteAction{Timeout: durationpb.New(fw.Timeout.D())}
	if len(fw.Backends) == 1 {
		a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: fw.Backends[0].Backend}
	} else {
		wc := &routev3.WeightedCluster{}
		for _, b := range fw.Backends {
			wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{Name: b.Backend, Weight: wrapperspb.UInt32(b.Weight)})
		}
		a.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	switch {
	case fw.Retry != nil:
		a.RetryPolicy = routeRetryPolicy(fw.Retry, fw.BackendTimeout)
	case fw.BackendTimeout > 0:
		// A route's retry_policy replaces the virtual host's whole: keep
		// the retries and bound each try.
		a.RetryPolicy = retryPolicy()
		a.RetryPolicy.PerTryTimeout = durationpb.New(fw.BackendTimeout.D())
	}
	if fw.RewriteHost != "" {
		a.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: fw.RewriteHost}
	}
	switch {
	case fw.RewritePrefixPath != "":
		a.PrefixRewrite, a.RegexRewrite = prefixRewrite(&r.Match, fw.RewritePrefixPath)
	case fw.RewriteFullPath != "":
		a.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
			Pattern: &matcherv3.RegexMatcher{Regex: "^/.*$"}, Substitution: fw.RewriteFullPath,
		}
	}
	if fw.HashSourceIP {
		a.HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{
			ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true},
		}}}
	}
	out.RequestHeadersToAdd = headerOptions(fw.RequestHeaders)
	out.RequestHeadersToRemove = fw.RequestHeaders.Remove
	out.ResponseHeadersToAdd = headerOptions(fw.ResponseHeaders)
	out.ResponseHeadersToRemove = fw.ResponseHeaders.Remove
	out.Action = &routev3.Route_Route{Route: a}
	return out
}

// prefixRewrite replaces the matched path prefix the way Gateway API's
// ReplacePrefixMatch does: whole path segments, trailing slashes of the
// prefix and of the replacement ignored, so /foo/bar with prefix /foo and
// replacement / becomes /bar (Envoy's prefix_rewrite would give //bar) and
// /foo becomes /. Plain prefix_rewrite is kept where it already gives that.
func prefixRewrite(m *model.Match, replacement string) (string, *matcherv3.RegexMatchAndSubstitute) {
	if m.PathType != model.PathPrefix {
		return replacement, nil
	}
	prefix, repl := strings.TrimSuffix(m.Path, "/"), strings.TrimSuffix(replacement, "/")
	switch {
	case repl == "":
		// The prefix and every slash after it become one slash.
		return "", &matcherv3.RegexMatchAndSubstitute{
			Pattern: &matcherv3.RegexMatcher{Regex: "^" + regexp.QuoteMeta(prefix) + "/*"}, Substitution: "/",
		}
	case prefix == m.Path && repl == replacement:
		return replacement, nil
	default:
		// The slash that follows the prefix stays (the match is by segment).
		return "", &matcherv3.RegexMatchAndSubstitute{
			Pattern: &matcherv3.RegexMatcher{Regex: "^" + regexp.QuoteMeta(prefix)}, Substitution: repl,
		}
	}
}

func headerOptions(h model.HeaderChanges) []*corev3.HeaderValueOption {
	var out []*corev3.HeaderValueOption
	for _, s := range h.Set {
		out = append(out, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: s.Name, Value: s.Value}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD})
	}
	for _, a := range h.Add {
		out = append(out, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: a.Name, Value: a.Value}, AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD})
	}
	return out
}

// Retries that make a dead backend invisible to clients: a request whose
// connect is refused, whose stream is refused or reset, or that got a 503
// goes to another host, and from the third attempt on to another priority
// (the failover cluster). Only idempotent methods are retried at all:
// Envoy's retriable_request_headers disables every retry_on condition for a
// request that matches none of them, so a POST is never sent twice. The
// clusters' retry budget bounds how many retries run at once.
const (
	retryNumRetries            = 2
	retryHostSelectionAttempts = 3
	retryPriorityUpdateEvery   = 2
)

var idempotentMethods = []string{"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"}

// vhostRetryPolicy is every virtual host's: one message shared by all of
// them (never modified: resources are only read once built), not ~2.7 KB
// per hostname kept by the translator.
var vhostRetryPolicy = retryPolicy()

func retryPolicy() *routev3.RetryPolicy {
	rp := &routev3.RetryPolicy{
		RetryOn:                       "connect-failure,refused-stream,reset,retriable-status-codes",
		NumRetries:                    wrapperspb.UInt32(retryNumRetries),
		RetriableStatusCodes:          []uint32{503},
		HostSelectionRetryMaxAttempts: retryHostSelectionAttempts,
		RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{
			Name:       RetryPreviousHosts,
			ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: typed(&previoushostsv3.PreviousHostsPredicate{})},
		}},
		RetryPriority: &routev3.RetryPolicy_RetryPriority{
			Name: RetryPreviousPriorities,
			ConfigType: &routev3.RetryPolicy_RetryPriority_TypedConfig{TypedConfig: typed(&previousprioritiesv3.PreviousPrioritiesConfig{
				UpdateFrequency: retryPriorityUpdateEvery,
			})},
		},
	}
	for _, m := range idempotentMethods {
		rp.RetriableRequestHeaders = append(rp.RetriableRequestHeaders, &routev3.HeaderMatcher{
			Name:                 ":method",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: m}}},
		})
	}
	return rp
}

// routeRetryPolicy is a route's own retry policy: the default one with the
// route's attempts, conditions, codes and per-try timeout. Attempts 0 is a
// policy without retries, which replaces the virtual host's. AllMethods
// drops the idempotent-method filter.
func routeRetryPolicy(r *model.Retry, backendTimeout model.Duration) *routev3.RetryPolicy {
	perTry := r.PerTryTimeout
	if perTry == 0 {
		perTry = backendTimeout
	}
	if r.Attempts == 0 {
		rp := &routev3.RetryPolicy{NumRetries: wrapperspb.UInt32(0)}
		if perTry > 0 {
			rp.PerTryTimeout = durationpb.New(perTry.D())
		}
		return rp
	}
	rp := retryPolicy()
	rp.NumRetries = wrapperspb.UInt32(r.Attempts)
	if len(r.RetryOn) > 0 {
		rp.RetryOn = strings.Join(r.RetryOn, ",")
	}
	switch {
	case !strings.Contains(","+rp.RetryOn+",", ",retriable-status-codes,"):
		rp.RetriableStatusCodes = nil
	case len(r.StatusCodes) > 0:
		rp.RetriableStatusCodes = slices.Clone(r.StatusCodes)
	}
	if r.AllMethods {
		rp.RetriableRequestHeaders = nil
	}
	if perTry > 0 {
		rp.PerTryTimeout = durationpb.New(perTry.D())
	}
	return rp
}
