package ingress

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// An Ingress with TLS redirects plain HTTP to https unless annotated
// fleetlb.io/ssl-redirect: "false"; another value is reported and the
// redirect stays on. Changing the annotation updates the Route.
func TestSSLRedirectAnnotation(t *testing.T) {
	ctx := context.Background()
	ns := testNamespace(t)
	tlsIngress := func(name, redirect string) *networkingv1.Ingress {
		ing := &networkingv1.Ingress{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: networkingv1.IngressSpec{
				IngressClassName: ptr.To(DefaultClass),
				TLS:              []networkingv1.IngressTLS{{Hosts: []string{name + ".example.com"}, SecretName: "cert"}},
				Rules:            []networkingv1.IngressRule{rule(name+".example.com", path("/", networkingv1.PathTypePrefix, backend("web", 8080)))},
			},
		}
		if redirect != "" {
			ing.Annotations = map[string]string{AnnotationSSLRedirect: redirect}
		}
		return ing
	}
	plainOn, plainOff, bad := tlsIngress("default", ""), tlsIngress("off", "false"), tlsIngress("bad", "no")
	create(t, nodePortService(ns, "web"), tlsSecret(ns, "cert", "c"), plainOn, plainOff, bad)

	redirect := func(name string, want bool) {
		t.Helper()
		eventually(t, fmt.Sprintf("Route of %s with redirectHTTP %v", name, want), func() error {
			rt, err := getRoute(RouteName(ns, name))
			if err != nil {
				return err
			}
			if len(rt.Spec.TLS) != 1 || rt.Spec.TLS[0].RedirectHTTP != want {
				return fmt.Errorf("tls %+v", rt.Spec.TLS)
			}
			return nil
		})
	}
	redirect("default", true)
	redirect("off", false)
	redirect("bad", true)
	eventually(t, "the bad value is reported", findEvent(ns, "bad", corev1.EventTypeWarning, "InvalidIngress", `annotation fleetlb.io/ssl-redirect: "no" is not true or false`))

	if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(plainOn), plainOn); err != nil {
		t.Fatal(err)
	}
	plainOn.Annotations = map[string]string{AnnotationSSLRedirect: "false"}
	if err := tenantEnv.Client.Update(ctx, plainOn); err != nil {
		t.Fatal(err)
	}
	redirect("default", false)
}
