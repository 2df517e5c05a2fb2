package gateway

import (
	"context"
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	corev1 "k8s.io/api/core/v1"
)

// A Gateway gets its own LoadBalancer: the listeners the fleet can serve
// (conflicting ones reported, not sent), the address it requests, and the
// Gateway API reasons when the address is refused; a hostname-less route
// attaches by sectionName with no hostnames; deleting the Gateway releases
// its LoadBalancer before the Gateway goes.
func TestGatewayOwnAddress(t *testing.T) {
	ctx := context.Background()
	ns := testNamespace(t)
	svc := service(ns, "web", corev1.ServiceTypeNodePort, 8080)
	gw := gatewayOf(ns, "gw", DefaultClass,
		gwv1.Listener{Name: "web", Protocol: gwv1.HTTPProtocolType, Port: 80},
		gwv1.Listener{Name: "same", Protocol: gwv1.HTTPSProtocolType, Port: 80,
			TLS: &gwv1.ListenerTLSConfig{CertificateRefs: []gwv1.SecretObjectReference{{Name: "cert"}}}})
	gw.Spec.Addresses = []gwv1.GatewaySpecAddress{{Type: ptr.To(gwv1.IPAddressType), Value: "127.0.50.9"}}
	hr := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "all"}, Spec: gwv1.HTTPRouteSpec{
		CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "gw", SectionName: ptr.To(gwv1.SectionName("web"))}}},
		Rules:           []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{backendRef(nil, "web", 8080, 1)}}},
	}}
	create(t, svc, gw, hr)

	lb := &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: mgmtNS, Name: GatewayLoadBalancerName(ns, "gw")}}
	eventually(t, "the Gateway's LoadBalancer", func() error { return mgmtEnv.Client.Get(ctx, client.ObjectKeyFromObject(lb), lb) })
	if lb.Spec.Source.Kind != v1.SourceGateway || lb.Spec.LoadBalancerIP != "127.0.50.9" || len(lb.Spec.Ports) != 0 ||
		!equality.Semantic.DeepEqual(lb.Spec.Listeners, []v1.GatewayListener{{Name: "web", Port: 80, Protocol: v1.ListenerHTTP}}) {
		t.Errorf("spec %+v", lb.Spec)
	}
	gwCondition := func(typ string, status metav1.ConditionStatus, reason string) func() error {
		return func() error {
			if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(gw), gw); err != nil {
				return err
			}
			return wantCondition(meta.FindStatusCondition(gw.Status.Conditions, typ), status, reason, gw.Generation)
		}
	}
	eventually(t, "second listener on the port conflicted", func() error {
		if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(gw), gw); err != nil {
			return err
		}
		for _, l := range gw.Status.Listeners {
			if l.Name == "same" {
				return wantCondition(meta.FindStatusCondition(l.Conditions, "Conflicted"), metav1.ConditionTrue, "ProtocolConflict", gw.Generation)
			}
		}
		return fmt.Errorf("no status for listener same")
	})

	// The route: no hostnames, on the listener it names.
	var rt *v1.Route
	eventually(t, "hostname-less Route", func() (err error) { rt, err = getRoute(RouteName("httproute", ns, "all")); return err })
	if len(rt.Spec.Hostnames) != 0 || !equality.Semantic.DeepEqual(rt.Spec.Parents, []v1.RouteParent{{LoadBalancer: lb.Name, Listeners: []string{"web"}}}) {
		t.Errorf("route hostnames %v parents %+v", rt.Spec.Hostnames, rt.Spec.Parents)
	}
	eventually(t, "route accepted", func() error {
		if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(hr), hr); err != nil {
			return err
		}
		return wantCondition(parentCondition(hr.Status.RouteStatus, "gw", gwv1.RouteConditionAccepted), metav1.ConditionTrue, "Accepted", hr.Generation)
	})

	// The pool refuses the requested address: not usable.
	lb.Status.ObservedGeneration = lb.Generation
	lb.Status.Conditions = []metav1.Condition{{Type: v1.ConditionAccepted, Status: metav1.ConditionFalse, Reason: v1.ReasonAddressNotAvailable,
		Message: "requested address 127.0.50.9 is not in address pool p", ObservedGeneration: lb.Generation, LastTransitionTime: metav1.Now()}}
	if err := mgmtEnv.Client.Status().Update(ctx, lb); err != nil {
		t.Fatal(err)
	}
	eventually(t, "AddressNotUsable", gwCondition("Programmed", metav1.ConditionFalse, string(gwv1.GatewayReasonAddressNotUsable)))
	// Another holds it: not assigned.
	lb.Status.Conditions[0].Reason, lb.Status.Conditions[0].Message = v1.ReasonAddressInUse, "requested address 127.0.50.9 is in use by another tenant"
	if err := mgmtEnv.Client.Status().Update(ctx, lb); err != nil {
		t.Fatal(err)
	}
	eventually(t, "AddressNotAssigned", gwCondition("Programmed", metav1.ConditionFalse, string(gwv1.GatewayReasonAddressNotAssigned)))
	// Served.
	serveGateway(t, lb, "127.0.50.9")
	eventually(t, "Programmed", gwCondition("Programmed", metav1.ConditionTrue, "Programmed"))
	if len(gw.Status.Addresses) != 1 || gw.Status.Addresses[0].Value != "127.0.50.9" {
		t.Errorf("addresses %+v", gw.Status.Addresses)
	}

	// A Gateway asking for a hostname address is not accepted and gets no LoadBalancer.
	named := gatewayOf(ns, "named", DefaultClass, gwv1.Listener{Name: "web", Protocol: gwv1.HTTPProtocolType, Port: 80})
	named.Spec.Addresses = []gwv1.GatewaySpecAddress{{Type: ptr.To(gwv1.HostnameAddressType), Value: "lb.example.com"}}
	create(t, named)
	eventually(t, "UnsupportedAddress", func() error {
		if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(named), named); err != nil {
			return err
		}
		return wantCondition(meta.FindStatusCondition(named.Status.Conditions, "Accepted"), metav1.ConditionFalse, string(gwv1.GatewayReasonUnsupportedAddress), named.Generation)
	})
	if err := mgmtEnv.Client.Get(ctx, client.ObjectKey{Namespace: mgmtNS, Name: GatewayLoadBalancerName(ns, "named")}, &v1.LoadBalancer{}); !apierrors.IsNotFound(err) {
		t.Errorf("a LoadBalancer for an unsupported address (%v)", err)
	}

	// Those reconciles found nothing to change in the LoadBalancer's spec.
	rv := lb.ResourceVersion
	if err := mgmtEnv.Client.Get(ctx, client.ObjectKeyFromObject(lb), lb); err != nil || lb.ResourceVersion != rv {
		t.Errorf("the Gateway's LoadBalancer was rewritten without a change: %v %s → %s", err, rv, lb.ResourceVersion)
	}

	// Deleted: the LoadBalancer goes, then the Gateway.
	if err := tenantEnv.Client.Delete(ctx, gw); err != nil {
		t.Fatal(err)
	}
	eventually(t, "LoadBalancer released", gone(func() error { return mgmtEnv.Client.Get(ctx, client.ObjectKeyFromObject(lb), &v1.LoadBalancer{}) }))
	eventually(t, "Gateway gone", gone(func() error { return tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(gw), &gwv1.Gateway{}) }))
}
