// Package gateway is the ccm's Gateway API controller: Gateways of the class
// `fleetlb` (controllerName fleetlb.io/gateway-controller) and the HTTPRoutes
// and GRPCRoutes attached to them become typed Routes in the tenant's
// namespace of the management cluster; the fleet's addresses and refusals
// come back as Gateway, listener and route parent status.
//
// Each Gateway gets its own VIP from the tenant's pool: the ccm writes it as
// a LoadBalancer of source kind Gateway carrying its listeners, and each
// route's Route names the listeners it attached to (spec.parents), so the
// fleet serves it only there, with the Gateway API's hostname semantics (a
// route without hostnames matches every host of its listeners). Listener
// protocols HTTP, HTTPS (TLS terminated) and TLS (passthrough, TLSRoute) are
// supported.
package gateway

import (
	"context"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

const (
	// DefaultClass is the GatewayClass the ccm serves and creates.
	DefaultClass = "fleetlb"
	// ControllerName is spec.controllerName of our GatewayClass.
	ControllerName gwv1.GatewayController = "fleetlb.io/gateway-controller"
	// Finalizer is what an older ccm put on routes; it is removed (see cleanup).
	Finalizer = "fleetlb.io/gateway-route-cleanup"
)

const (
	kindGateway   gwv1.Kind = "Gateway"
	kindHTTPRoute gwv1.Kind = "HTTPRoute"
	kindGRPCRoute gwv1.Kind = "GRPCRoute"
	kindService   gwv1.Kind = "Service"
	kindSecret    gwv1.Kind = "Secret"
)

// parentGateway is the Gateway a parentRef names, when it names one.
func parentGateway(routeNS string, p gwv1.ParentReference) (types.NamespacedName, bool) {
	if p.Group != nil && *p.Group != gwv1.GroupName {
		return types.NamespacedName{}, false
	}
	if p.Kind != nil && *p.Kind != kindGateway {
		return types.NamespacedName{}, false
	}
	ns := routeNS
	if p.Namespace != nil {
		ns = string(*p.Namespace)
	}
	return types.NamespacedName{Namespace: ns, Name: string(p.Name)}, true
}

// hostnameMatch intersects a route hostname with a listener hostname as the
// Gateway API defines it; "" when they do not intersect.
func hostnameMatch(listener, route string) string {
	switch {
	case listener == "":
		return route
	case route == "":
		return listener
	case listener == route:
		return route
	case strings.HasPrefix(listener, "*.") && !strings.HasPrefix(route, "*.") && strings.HasSuffix(route, listener[1:]):
		return route
	case strings.HasPrefix(route, "*.") && !strings.HasPrefix(listener, "*.") && strings.HasSuffix(listener, route[1:]):
		return listener
	case strings.HasPrefix(route, "*.") && strings.HasPrefix(listener, "*."):
		// The more specific wildcard, when one contains the other.
		if strings.HasSuffix(route, listener[1:]) {
			return route
		}
		if strings.HasSuffix(listener, route[1:]) {
			return listener
		}
	}
	return ""
}

// listenerKinds are the route kinds a listener admits, and whether every kind it names is supported.
func listenerKinds(l *gwv1.Listener) ([]gwv1.Kind, bool) {
	var supported []gwv1.Kind
	switch l.Protocol {
	case gwv1.HTTPProtocolType, gwv1.HTTPSProtocolType:
		supported = []gwv1.Kind{kindHTTPRoute, kindGRPCRoute}
	case gwv1.TLSProtocolType:
		supported = []gwv1.Kind{kindTLSRoute}
	default:
		return nil, true
	}
	if l.AllowedRoutes == nil || len(l.AllowedRoutes.Kinds) == 0 {
		return supported, true
	}
	var out []gwv1.Kind
	valid := true
	for _, k := range l.AllowedRoutes.Kinds {
		if (k.Group == nil || *k.Group == gwv1.GroupName) && containsKind(supported, k.Kind) {
			out = append(out, k.Kind)
		} else {
			valid = false
		}
	}
	return out, valid
}

// namespaceAllowed reports whether the listener admits routes from ns.
func namespaceAllowed(ctx context.Context, c client.Reader, gw *gwv1.Gateway, l *gwv1.Listener, ns string) (bool, error) {
	from := gwv1.NamespacesFromSame
	if l.AllowedRoutes != nil && l.AllowedRoutes.Namespaces != nil && l.AllowedRoutes.Namespaces.From != nil {
		from = *l.AllowedRoutes.Namespaces.From
	}
	switch from {
	case gwv1.NamespacesFromAll:
		return true, nil
	case gwv1.NamespacesFromSame:
		return ns == gw.Namespace, nil
	case gwv1.NamespacesFromSelector:
		if l.AllowedRoutes.Namespaces.Selector == nil {
			return false, nil
		}
		sel, err := metav1.LabelSelectorAsSelector(l.AllowedRoutes.Namespaces.Selector)
		if err != nil {
			return false, nil
		}
		var n corev1.Namespace
		if err := c.Get(ctx, client.ObjectKey{Name: ns}, &n); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		return sel.Matches(labels.Set(n.Labels)), nil
	}
	return false, nil
}

// attachment is what one parentRef of a route gets from one Gateway.
type attachment struct {
	// hostnames the route is served on through this parent.
	hostnames []string
	// listeners that took the route (for TLS and attachedRoutes), with the
	// hostnames served through each.
	listeners []*gwv1.Listener
	hostsOf   map[gwv1.SectionName][]string
	// reason when no listener took it.
	reason gwv1.RouteConditionReason
	msg    string
}

// attach evaluates one parentRef of a route of kind against a Gateway.
func attach(ctx context.Context, c client.Reader, gw *gwv1.Gateway, kind gwv1.Kind, routeNS string, routeHosts []gwv1.Hostname, p gwv1.ParentReference) (attachment, error) {
	var a attachment
	matchedRef := false
	allowedSome := false
	for i := range gw.Spec.Listeners {
		l := &gw.Spec.Listeners[i]
		if p.SectionName != nil && *p.SectionName != l.Name {
			continue
		}
		if p.Port != nil && *p.Port != l.Port {
			continue
		}
		matchedRef = true
		kinds, _ := listenerKinds(l)
		if !containsKind(kinds, kind) {
			continue
		}
		ok, err := namespaceAllowed(ctx, c, gw, l, routeNS)
		if err != nil {
			return a, err
		}
		if !ok {
			continue
		}
		allowedSome = true
		lh := ""
		if l.Hostname != nil {
			lh = string(*l.Hostname)
		}
		var hosts []string
		if len(routeHosts) == 0 {
			if lh != "" {
				hosts = []string{lh}
			}
		} else {
			for _, rh := range routeHosts {
				if h := hostnameMatch(lh, string(rh)); h != "" {
					hosts = append(hosts, h)
				}
			}
		}
		if len(hosts) == 0 && (lh != "" || len(routeHosts) > 0) {
			continue // no intersection with this listener
		}
		a.listeners = append(a.listeners, l)
		if a.hostsOf == nil {
			a.hostsOf = map[gwv1.SectionName][]string{}
		}
		a.hostsOf[l.Name] = hosts
		for _, h := range hosts {
			if !contains(a.hostnames, h) {
				a.hostnames = append(a.hostnames, h)
			}
		}
	}
	switch {
	case !matchedRef:
		a.reason, a.msg = gwv1.RouteReasonNoMatchingParent, "no listener matches the parentRef's sectionName and port"
	case !allowedSome:
		a.reason, a.msg = gwv1.RouteReasonNotAllowedByListeners, "no listener allows routes of this kind from this namespace"
	case len(a.listeners) == 0:
		a.reason, a.msg = gwv1.RouteReasonNoMatchingListenerHostname, "no listener hostname intersects the route's hostnames"
	}
	return a, nil
}

func containsKind(ks []gwv1.Kind, k gwv1.Kind) bool {
	for _, x := range ks {
		if x == k {
			return true
		}
	}
	return false
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// refPermitted reports whether a ReferenceGrant in to.Namespace allows an
// object of fromKind in fromNS to reference to (of toKind, core group).
func refPermitted(ctx context.Context, c client.Reader, fromKind gwv1.Kind, fromNS string, toKind gwv1.Kind, to types.NamespacedName) (bool, error) {
	if fromNS == to.Namespace {
		return true, nil
	}
	var grants gwv1.ReferenceGrantList
	if err := c.List(ctx, &grants, client.InNamespace(to.Namespace)); err != nil {
		return false, err
	}
	for _, g := range grants.Items {
		fromOK := false
		for _, f := range g.Spec.From {
			if f.Group == gwv1.GroupName && f.Kind == fromKind && string(f.Namespace) == fromNS {
				fromOK = true
			}
		}
		if !fromOK {
			continue
		}
		for _, t := range g.Spec.To {
			if t.Group == "" && t.Kind == toKind && (t.Name == nil || string(*t.Name) == to.Name) {
				return true, nil
			}
		}
	}
	return false, nil
}
