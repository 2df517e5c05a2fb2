// Package translate turns a model.Fleet into Envoy resources. It is a pure
// function: the same model gives byte-identical resources, which is what lets
// the xDS server version resources by content hash and push only what changed.
//
// Listeners are stable: one per L4 VIP:port, and per fleet one "http" and one
// "https" listener whose routes come from RDS (one route configuration per
// certificate on HTTPS, so each tenant's is its own), certificates from SDS and
// endpoints from EDS, so route, cluster, endpoint and secret changes never
// touch a listener.
package translate

import (
	"cmp"
	"errors"
	"fmt"
	"slices"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/fleetlb/fleetlb/internal/model"
)

// Names of the fleet-wide resources.
const (
	HTTPListenerName  = "http"
	HTTPSListenerName = "https"
	HTTPRouteName     = "http"
	// HTTPSRouteName prefixes the route configuration of each HTTPS filter chain (HTTPSRouteNameFor).
	HTTPSRouteName = "https"
)

// Output is the xDS resources of one fleet, each list sorted by name.
type Output struct {
	Listeners []types.Resource
	Routes    []types.Resource
	Clusters  []types.Resource
	Endpoints []types.Resource
	Secrets   []types.Resource
}

// ByType is the form the xDS server and go-control-plane's snapshot take.
func (o *Output) ByType() map[resource.Type][]types.Resource {
	return map[resource.Type][]types.Resource{
		resource.ListenerType: o.Listeners,
		resource.RouteType:    o.Routes,
		resource.ClusterType:  o.Clusters,
		resource.EndpointType: o.Endpoints,
		resource.SecretType:   o.Secrets,
	}
}

// Translate validates the fleet and builds its resources. Every resource
// passes its own Validate(); any problem is returned, never panicked.
func Translate(f *model.Fleet) (*Output, error) {
	if err := f.Validate(); err != nil {
		return nil, fmt.Errorf("invalid fleet model: %w", err)
	}
	out := &Output{}
	backends := map[string]*model.Backend{}
	for i := range f.Backends {
		backends[f.Backends[i].Name] = &f.Backends[i]
	}
	var errs []error
	for _, s := range f.L4 {
		l, err := l4Listener(&s, backends[s.Backend])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out.Listeners = append(out.Listeners, l)
	}
	l7, err := httpResources(f)
	if err != nil {
		errs = append(errs, err)
	} else {
		out.Listeners = append(out.Listeners, l7.listeners...)
		out.Routes = append(out.Routes, l7.routes...)
		out.Secrets = append(out.Secrets, l7.secrets...)
		emitted := map[string]bool{}
		for _, s := range l7.secrets {
			emitted[nameOf(s)] = true
		}
		gw := gatewayResources(f, emitted)
		out.Listeners = append(out.Listeners, gw.listeners...)
		out.Routes = append(out.Routes, gw.routes...)
		out.Secrets = append(out.Secrets, gw.secrets...)
	}
	for i := range f.Backends {
		c, cla, err := cluster(&f.Backends[i])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out.Clusters = append(out.Clusters, c)
		out.Endpoints = append(out.Endpoints, cla)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, list := range [][]types.Resource{out.Listeners, out.Routes, out.Clusters, out.Endpoints, out.Secrets} {
		slices.SortFunc(list, func(a, b types.Resource) int { return cmp.Compare(nameOf(a), nameOf(b)) })
		for _, r := range list {
			if v, ok := r.(interface{ Validate() error }); ok {
				if err := v.Validate(); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", nameOf(r), err))
				}
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("generated resources are invalid (a translator bug): %w", err)
	}
	return out, nil
}

func nameOf(r types.Resource) string {
	if n, ok := r.(interface{ GetName() string }); ok {
		return n.GetName()
	}
	if n, ok := r.(interface{ GetClusterName() string }); ok {
		return n.GetClusterName()
	}
	return ""
}

// L4ListenerName is the name of the listener of one VIP port.
func L4ListenerName(p model.Protocol, vip string, port uint16) string {
	return fmt.Sprintf("l4/%s/%s", map[model.Protocol]string{model.TCP: "tcp", model.UDP: "udp"}[p], joinHostPort(vip, port))
}

func joinHostPort(host string, port uint16) string {
	for i := 0; i < len(host); i++ {
		if host[i] == ':' {
			return fmt.Sprintf("[%s]:%d", host, port)
		}
	}
	return fmt.Sprintf("%s:%d", host, port)
}
