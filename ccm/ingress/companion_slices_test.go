package ingress

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The companion of a Service without a selector gets copies of the
// original's hand-written EndpointSlices (a cluster's kube-proxy serves the
// companion's node port from them); they follow the originals and go when
// the original gets a selector (the companion copies it then).
func TestCompanionOfServiceWithoutSelectorMirrorsEndpointSlices(t *testing.T) {
	ctx := context.Background()
	ns := testNamespace(t)
	svc := clusterIPService(ns, "manual")
	svc.Spec.Selector = nil
	orig := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "manual-ip4", Labels: map[string]string{discoveryv1.LabelServiceName: "manual"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](3000), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"198.18.0.7"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
	}
	ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "manual"}, Spec: networkingv1.IngressSpec{
		IngressClassName: ptr.To(DefaultClass),
		Rules:            []networkingv1.IngressRule{rule("manual.example.com", path("/", networkingv1.PathTypePrefix, backend("manual", "http")))},
	}}
	create(t, svc, orig, ing) // the Ingress makes the companion
	mirrorKey := client.ObjectKey{Namespace: ns, Name: CompanionName("manual-ip4")}
	mirrored := func(endpoints []discoveryv1.Endpoint) func() error {
		return func() error {
			var m discoveryv1.EndpointSlice
			if err := tenantEnv.Client.Get(ctx, mirrorKey, &m); err != nil {
				return err
			}
			if m.Labels[discoveryv1.LabelServiceName] != CompanionName("manual") || m.Labels[discoveryv1.LabelManagedBy] != SliceMirrorManagedBy {
				return fmt.Errorf("labels %v", m.Labels)
			}
			if len(m.OwnerReferences) != 1 || m.OwnerReferences[0].Name != CompanionName("manual") {
				return fmt.Errorf("owners %+v", m.OwnerReferences)
			}
			if !equality.Semantic.DeepEqual(m.Ports, orig.Ports) || !equality.Semantic.DeepEqual(m.Endpoints, endpoints) {
				return fmt.Errorf("ports %+v endpoints %+v", m.Ports, m.Endpoints)
			}
			return nil
		}
	}
	eventually(t, "mirrored slice", mirrored(orig.Endpoints))

	orig.Endpoints = append(orig.Endpoints, discoveryv1.Endpoint{Addresses: []string{"198.18.0.8"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
	if err := tenantEnv.Client.Update(ctx, orig); err != nil {
		t.Fatal(err)
	}
	eventually(t, "mirror follows the original", mirrored(orig.Endpoints))

	// With a selector, the companion copies it: no mirrors.
	if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
		t.Fatal(err)
	}
	svc.Spec.Selector = map[string]string{"app": "manual"}
	if err := tenantEnv.Client.Update(ctx, svc); err != nil {
		t.Fatal(err)
	}
	eventually(t, "mirror removed", gone(func() error { return tenantEnv.Client.Get(ctx, mirrorKey, &discoveryv1.EndpointSlice{}) }))
}
