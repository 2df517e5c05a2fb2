package gateway

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// A TLS listener in Passthrough mode is served (Terminate is not), a TLSRoute
// attaches to it only, and its Route carries the SNI hostnames and a TCP backend.
func TestTLSRoutePassthrough(t *testing.T) {
	ctx := context.Background()
	ns := testNamespace(t)
	svc := service(ns, "secure", corev1.ServiceTypeNodePort, 8443)
	gw := gatewayOf(ns, "gw", DefaultClass,
		gwv1.Listener{Name: "tls", Protocol: gwv1.TLSProtocolType, Port: 443, TLS: &gwv1.ListenerTLSConfig{Mode: ptr.To(gwv1.TLSModePassthrough)}},
		gwv1.Listener{Name: "terminate", Protocol: gwv1.TLSProtocolType, Port: 8443,
			TLS: &gwv1.ListenerTLSConfig{Mode: ptr.To(gwv1.TLSModeTerminate), CertificateRefs: []gwv1.SecretObjectReference{{Name: "cert"}}}},
		gwv1.Listener{Name: "http", Protocol: gwv1.HTTPProtocolType, Port: 80})
	tr := &gwv1.TLSRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "secure"}, Spec: gwv1.TLSRouteSpec{
		CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "gw"}}},
		Hostnames:       []gwv1.Hostname{"secure.example.com"},
		Rules: []gwv1.TLSRouteRule{{BackendRefs: []gwv1.BackendRef{{BackendObjectReference: gwv1.BackendObjectReference{
			Name: "secure", Port: ptr.To(gwv1.PortNumber(8443))}}}}},
	}}
	create(t, svc, gw, tr)

	var rt *v1.Route
	eventually(t, "the TLSRoute's Route", func() (err error) { rt, err = getRoute(RouteName("tlsroute", ns, "secure")); return err })
	if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
		t.Fatal(err)
	}
	if rt.Spec.Source.Kind != v1.SourceTLSRoute || !equality.Semantic.DeepEqual(rt.Spec.Hostnames, []v1.Hostname{"secure.example.com"}) ||
		!equality.Semantic.DeepEqual(rt.Spec.Parents, []v1.RouteParent{{LoadBalancer: GatewayLoadBalancerName(ns, "gw"), Listeners: []string{"tls"}}}) {
		t.Errorf("route %+v", rt.Spec)
	}
	if len(rt.Spec.Rules) != 1 || len(rt.Spec.Rules[0].Backends) != 1 || rt.Spec.Rules[0].Backends[0].Protocol != v1.BackendTCP ||
		rt.Spec.Rules[0].Backends[0].NodePort != v1.PortNumber(svc.Spec.Ports[0].NodePort) {
		t.Errorf("rules %+v", rt.Spec.Rules)
	}
	var lb v1.LoadBalancer
	if err := mgmtEnv.Client.Get(ctx, client.ObjectKey{Namespace: mgmtNS, Name: GatewayLoadBalancerName(ns, "gw")}, &lb); err != nil {
		t.Fatal(err)
	}
	if want := []v1.GatewayListener{{Name: "tls", Port: 443, Protocol: v1.ListenerTLS}, {Name: "http", Port: 80, Protocol: v1.ListenerHTTP}}; !equality.Semantic.DeepEqual(lb.Spec.Listeners, want) {
		t.Errorf("listeners %+v, want %+v", lb.Spec.Listeners, want)
	}
	eventually(t, "listener status", func() error {
		if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(gw), gw); err != nil {
			return err
		}
		for _, l := range gw.Status.Listeners {
			switch l.Name {
			case "tls":
				if l.AttachedRoutes != 1 || len(l.SupportedKinds) != 1 || l.SupportedKinds[0].Kind != kindTLSRoute {
					return fmt.Errorf("tls listener: attached %d kinds %v", l.AttachedRoutes, l.SupportedKinds)
				}
			case "terminate":
				if err := wantCondition(meta.FindStatusCondition(l.Conditions, "Accepted"), metav1.ConditionFalse, "UnsupportedValue", gw.Generation); err != nil {
					return err
				}
			case "http":
				if l.AttachedRoutes != 0 {
					return fmt.Errorf("a TLSRoute attached to the HTTP listener")
				}
			}
		}
		return nil
	})
	eventually(t, "TLSRoute accepted", func() error {
		if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(tr), tr); err != nil {
			return err
		}
		return wantCondition(parentCondition(tr.Status.RouteStatus, "gw", gwv1.RouteConditionAccepted), metav1.ConditionTrue, "Accepted", tr.Generation)
	})
}
