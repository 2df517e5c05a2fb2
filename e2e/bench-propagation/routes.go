package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/e2e/harness"
	"github.com/fleetlb/fleetlb/internal/testcerts"
)

// runRoutes measures Ingresses with TLS: each has its own hostname, Secret and
// NodePort Service (created beforehand, with its echo running, so only the
// Ingress's own propagation is timed).
func runRoutes(n int, timeout time.Duration) error {
	h, f, tenants, done, err := fleet()
	if err != nil {
		return err
	}
	defer done()
	ctx := context.Background()
	is, err := testcerts.NewCA()
	if err != nil {
		return err
	}
	var pf v1.ProxyFleet
	if err := harness.Eventually(time.Minute, func() error {
		if err := f.Mgmt.Client.Get(ctx, client.ObjectKey{Name: v1.DefaultFleetName}, &pf); err != nil {
			return err
		}
		if len(pf.Status.Addresses) == 0 {
			return fmt.Errorf("the fleet has no VIP yet")
		}
		return nil
	}); err != nil {
		return err
	}
	httpsAddr := netip.AddrPortFrom(netip.MustParseAddr(string(pf.Status.Addresses[0].IP)), harness.HTTPSPort).String()

	hosts := make([]string, n)
	for i := range n {
		tc := tenants[i%2]
		name := fmt.Sprintf("web-%03d", i)
		hosts[i] = fmt.Sprintf("%s.%s.example.com", name, tc.Name)
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"app": name},
				Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}}}
		sec, _, err := is.Secret("default", name+"-tls", hosts[i])
		if err != nil {
			return err
		}
		for _, o := range []client.Object{svc, sec} {
			if err := tc.Env.Client.Create(ctx, o); err != nil {
				return err
			}
		}
		if err := tc.ServeHTTPNodePorts("default", name, map[string]string{tc.Name + "-1": fmt.Sprintf("127.0.11%d.1", i%2+1)}); err != nil {
			return err
		}
	}

	samples := make([]sample, n)
	errs := make(chan error, n)
	deadline := time.Now().Add(timeout)
	var wg sync.WaitGroup
	for i := range n {
		tc := tenants[i%2]
		name := fmt.Sprintf("web-%03d", i)
		ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}, Spec: networkingv1.IngressSpec{
			IngressClassName: ptr.To("fleetlb"),
			TLS:              []networkingv1.IngressTLS{{Hosts: []string{hosts[i]}, SecretName: name + "-tls"}},
			Rules: []networkingv1.IngressRule{{Host: hosts[i], IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
				Paths: []networkingv1.HTTPIngressPath{{Path: "/", PathType: ptr.To(networkingv1.PathTypePrefix), Backend: networkingv1.IngressBackend{
					Service: &networkingv1.IngressServiceBackend{Name: name, Port: networkingv1.ServiceBackendPort{Number: 80}}}}}}}}},
		}}
		applied := time.Now()
		if err := tc.Env.Client.Create(ctx, ing); err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := harness.Eventually(time.Until(deadline), func() error {
				var got networkingv1.Ingress
				if err := tc.Env.Client.Get(ctx, client.ObjectKeyFromObject(ing), &got); err != nil {
					return err
				}
				if len(got.Status.LoadBalancer.Ingress) == 0 {
					return fmt.Errorf("%s has no address", name)
				}
				return nil
			}); err != nil {
				errs <- err
				return
			}
			samples[i].address = time.Since(applied)
			c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
				TLSClientConfig: &tls.Config{RootCAs: is.Pool}, DisableKeepAlives: true,
				DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, network, httpsAddr)
				}}}
			for time.Now().Before(deadline) {
				if resp, err := c.Get("https://" + hosts[i] + "/"); err == nil {
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK && resp.Header.Get("X-Echo-Node") == tc.Name+"-1" {
						samples[i].traffic = time.Since(applied)
						return
					}
				}
				time.Sleep(20 * time.Millisecond)
			}
			errs <- fmt.Errorf("%s: no HTTPS 200 through %s before the deadline", hosts[i], httpsAddr)
		}()
	}
	wg.Wait()
	close(errs)
	if err := failed(h, errs); err != nil {
		return err
	}
	fmt.Printf("%d Ingresses with TLS over 2 tenants (created back to back):\n", n)
	report(samples, "apply → address on the Ingress", func(s sample) time.Duration { return s.address })
	report(samples, "apply → first HTTPS 200 via the VIP", func(s sample) time.Duration { return s.traffic })
	return nil
}
