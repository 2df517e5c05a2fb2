package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/fleetlb/fleetlb/e2e/harness"
	"github.com/fleetlb/fleetlb/internal/testcerts"
)

func clusterIP(name string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}}}
}

// l7Examples creates team-a's Ingress with TLS (on the fleet's shared VIP)
// and team-b's Gateway + HTTPRoute (on the Gateway's own VIP), plays
// kube-proxy for their backends, waits until both answer, and returns the
// two VIPs. The CA is written to dir/ca.crt.
func l7Examples(dir string, tenants map[string]*harness.Tenant, nodeIPs map[string]map[string]string) (string, string, error) {
	ctx := context.Background()
	ca, err := testcerts.NewCA()
	if err != nil {
		return "", "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca.PEM, 0o644); err != nil {
		return "", "", err
	}
	fmt.Println("creating team-a's Ingress with TLS and team-b's Gateway + HTTPRoute ...")
	a, b := tenants["team-a"], tenants["team-b"]
	secret, _, err := ca.Secret("default", "site-tls", "web.team-a.example.com")
	if err != nil {
		return "", "", err
	}
	ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "site"}, Spec: networkingv1.IngressSpec{
		IngressClassName: ptr.To("fleetlb"),
		TLS:              []networkingv1.IngressTLS{{Hosts: []string{"web.team-a.example.com"}, SecretName: "site-tls"}},
		Rules: []networkingv1.IngressRule{{Host: "web.team-a.example.com", IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
			Paths: []networkingv1.HTTPIngressPath{{Path: "/", PathType: ptr.To(networkingv1.PathTypePrefix), Backend: networkingv1.IngressBackend{
				Service: &networkingv1.IngressServiceBackend{Name: "site", Port: networkingv1.ServiceBackendPort{Number: 80}}}}}}}}},
	}}
	for _, o := range []client.Object{clusterIP("site"), secret, ing} {
		if err := a.Env.Client.Create(ctx, o); err != nil {
			return "", "", err
		}
	}
	if err := gwv1.Install(b.Env.Scheme); err != nil {
		return "", "", err
	}
	ref := func(name string) []gwv1.HTTPBackendRef {
		return []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{
			Name: gwv1.ObjectName(name), Port: ptr.To(gwv1.PortNumber(80))}}}}
	}
	gw := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "gw"}, Spec: gwv1.GatewaySpec{
		GatewayClassName: "fleetlb",
		Listeners:        []gwv1.Listener{{Name: "http", Port: harness.HTTPPort, Protocol: gwv1.HTTPProtocolType}},
	}}
	// No hostnames: on the Gateway's own VIP the route serves every host.
	hr := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "shop"}, Spec: gwv1.HTTPRouteSpec{
		CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "gw"}}},
		Rules: []gwv1.HTTPRouteRule{
			{Matches: []gwv1.HTTPRouteMatch{{Headers: []gwv1.HTTPHeaderMatch{{Name: "X-Version", Value: "v2"}}}}, BackendRefs: ref("shop-v2")},
			{BackendRefs: ref("shop-v1")},
		},
	}}
	for _, o := range []client.Object{clusterIP("shop-v1"), clusterIP("shop-v2"), gw, hr} {
		if err := b.Env.Client.Create(ctx, o); err != nil {
			return "", "", err
		}
	}
	for tc, svcs := range map[*harness.Tenant][]string{a: {"site"}, b: {"shop-v1", "shop-v2"}} {
		for _, svc := range svcs {
			if err := tc.ServeCompanion("default", svc, nodeIPs[tc.Name], 2*time.Minute); err != nil {
				return "", "", err
			}
		}
	}
	var vip string
	if err := harness.Eventually(2*time.Minute, func() error {
		var got networkingv1.Ingress
		if err := a.Env.Client.Get(ctx, client.ObjectKeyFromObject(ing), &got); err != nil {
			return err
		}
		if len(got.Status.LoadBalancer.Ingress) == 0 {
			return fmt.Errorf("team-a's Ingress has no address yet")
		}
		vip = got.Status.LoadBalancer.Ingress[0].IP
		return nil
	}); err != nil {
		return "", "", err
	}
	var gwVIP string
	if err := harness.Eventually(2*time.Minute, func() error {
		var got gwv1.Gateway
		if err := b.Env.Client.Get(ctx, client.ObjectKeyFromObject(gw), &got); err != nil {
			return err
		}
		if len(got.Status.Addresses) == 0 {
			return fmt.Errorf("team-b's Gateway has no address yet")
		}
		gwVIP = got.Status.Addresses[0].Value
		return nil
	}); err != nil {
		return "", "", err
	}
	// Both answer through their VIPs before the demo says it is ready: team-a's
	// Ingress over HTTPS on the shared VIP (its plain HTTP redirects there),
	// team-b's route over HTTP on the Gateway's own VIP.
	via := func(addr string, port int) *http.Client {
		to := net.JoinHostPort(addr, fmt.Sprint(port))
		return &http.Client{Timeout: 2 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool},
				DialContext: func(ctx context.Context, n, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, n, to)
				}}}
	}
	for url, c := range map[string]*http.Client{
		"https://web.team-a.example.com/": via(vip, harness.HTTPSPort), "http://shop.team-b.example.com/": via(gwVIP, harness.HTTPPort)} {
		if err := harness.Eventually(2*time.Minute, func() error {
			resp, err := c.Get(url)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: status %d", url, resp.StatusCode)
			}
			return nil
		}); err != nil {
			return "", "", err
		}
	}
	return vip, gwVIP, nil
}
