package translate

import (
	"cmp"
	"fmt"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/fleetlb/fleetlb/internal/model"
)

// GatewayListenerName is the Envoy listener of one port of a tenant
// Gateway; an HTTP port's route configuration has the same name. Both derive
// from the management object's identity (tenant and name), never from what
// the tenant wrote.
func GatewayListenerName(ref model.Ref, port uint16) string {
	return fmt.Sprintf("gateway/%s/%s/%d", ref.Tenant, ref.Name, port)
}

// GatewayRouteNameFor is the route configuration of one HTTPS listener of a Gateway port.
func GatewayRouteNameFor(ref model.Ref, port uint16, listener string) string {
	return GatewayListenerName(ref, port) + "/" + listener
}

// gatewayResources builds one listener per Gateway port with its route
// configurations, and the secrets its HTTPS listeners use that are not in
// emitted yet.
func gatewayResources(f *model.Fleet, emitted map[string]bool) *l7Resources {
	out := &l7Resources{}
	certs := map[string]*model.Certificate{}
	for i := range f.Certificates {
		certs[f.Certificates[i].Name] = &f.Certificates[i]
	}
	for gi := range f.Gateways {
		g := &f.Gateways[gi]
		for pi := range g.Ports {
			gp := &g.Ports[pi]
			name := GatewayListenerName(g.Ref, gp.Port)
			l := &listenerv3.Listener{
				Name:                          name,
				Address:                       socketAddress(g.VIP, gp.Port, false),
				PerConnectionBufferLimitBytes: wrapperspb.UInt32(connectionBufferLimit),
			}
			switch gp.Protocol {
			case model.ListenerHTTP:
				out.routes = append(out.routes, gatewayRouteConfig(name, gp.VirtualHosts))
				l.FilterChains = []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{hcm(name, name)}}}
			case model.ListenerHTTPS:
				tls := slices.Clone(gp.Listeners)
				// Named server names first, the catch-all chain last: the order
				// does not change Envoy's choice (most specific match), but
				// it keeps the output stable.
				slices.SortFunc(tls, func(a, b model.GatewayTLSListener) int {
					return cmp.Or(cmp.Compare(unnamed(a), unnamed(b)), cmp.Compare(a.Hostname, b.Hostname), cmp.Compare(a.Name, b.Name))
				})
				for _, tl := range tls {
					rc := GatewayRouteNameFor(g.Ref, gp.Port, tl.Name)
					out.routes = append(out.routes, gatewayRouteConfig(rc, tl.VirtualHosts))
					if c := certs[tl.Certificate]; c != nil && !emitted[c.Name] {
						emitted[c.Name] = true
						out.secrets = append(out.secrets, secret(c))
					}
					fc := &listenerv3.FilterChain{
						Name: tl.Name,
						TransportSocket: &corev3.TransportSocket{Name: TransportTLS, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: typed(&tlsv3.DownstreamTlsContext{
							CommonTlsContext: &tlsv3.CommonTlsContext{
								TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: tl.Certificate, SdsConfig: adsSource()}},
								AlpnProtocols:                  []string{"h2", "http/1.1"},
							},
						})}},
						Filters: []*listenerv3.Filter{hcm(name, rc)},
					}
					if tl.Hostname != "" {
						fc.FilterChainMatch = &listenerv3.FilterChainMatch{ServerNames: []string{tl.Hostname}}
					}
					l.FilterChains = append(l.FilterChains, fc)
				}
				l.ListenerFilters = []*listenerv3.ListenerFilter{{
					Name:       FilterTLSInspector,
					ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: typed(&tlsinspectorv3.TlsInspector{})},
				}}
			case model.ListenerTLS:
				for _, r := range gp.Passthrough {
					fc := &listenerv3.FilterChain{Name: r.Name, Filters: []*listenerv3.Filter{{Name: FilterTCPProxy, ConfigType: &listenerv3.Filter_TypedConfig{
						TypedConfig: typed(&tcpproxyv3.TcpProxy{
							StatPrefix:         name,
							ClusterSpecifier:   &tcpproxyv3.TcpProxy_Cluster{Cluster: r.Backend},
							IdleTimeout:        durationpb.New(defaultTCPIdle),
							MaxConnectAttempts: wrapperspb.UInt32(tcpConnectAttempts),
						})}}}}
					if len(r.Hostnames) > 0 {
						fc.FilterChainMatch = &listenerv3.FilterChainMatch{ServerNames: slices.Sorted(slices.Values(r.Hostnames))}
					}
					l.FilterChains = append(l.FilterChains, fc)
				}
				slices.SortFunc(l.FilterChains, func(a, b *listenerv3.FilterChain) int { return cmp.Compare(a.Name, b.Name) })
				l.ListenerFilters = []*listenerv3.ListenerFilter{{
					Name:       FilterTLSInspector,
					ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: typed(&tlsinspectorv3.TlsInspector{})},
				}}
			}
			out.listeners = append(out.listeners, l)
		}
	}
	return out
}

// gatewayRouteConfig is one route configuration of a Gateway: its virtual
// hosts by name; "*" serves every host no other virtual host names.
func gatewayRouteConfig(name string, vhosts []model.VirtualHost) *routev3.RouteConfiguration {
	rc := &routev3.RouteConfiguration{Name: name}
	sorted := slices.Clone(vhosts)
	slices.SortFunc(sorted, func(a, b model.VirtualHost) int { return cmp.Compare(a.Name, b.Name) })
	for i := range sorted {
		rc.VirtualHosts = append(rc.VirtualHosts, virtualHost(&sorted[i]))
	}
	return rc
}

func secret(c *model.Certificate) types.Resource {
	return &tlsv3.Secret{Name: c.Name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte(c.CertPEM)}},
		PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte(c.KeyPEM)}},
	}}}
}

func unnamed(l model.GatewayTLSListener) int {
	if l.Hostname == "" {
		return 1
	}
	return 0
}
