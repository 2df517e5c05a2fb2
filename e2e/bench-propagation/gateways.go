package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/fleetlb/fleetlb/e2e/harness"
)

// runGateways measures Gateways on their own VIPs: each gets a Gateway (one
// HTTP listener) and a hostname-less HTTPRoute applied together, in front of
// a NodePort Service created beforehand with its echo running; it reports
// apply → Gateway Programmed with its address, and apply → first HTTP 200
// through that address.
func runGateways(n int, timeout time.Duration) error {
	h, _, tenants, done, err := fleet()
	if err != nil {
		return err
	}
	defer done()
	ctx := context.Background()
	for _, tc := range tenants {
		if err := gwv1.Install(tc.Env.Scheme); err != nil {
			return err
		}
	}
	for i := range n {
		tc := tenants[i%2]
		name := fmt.Sprintf("web-%03d", i)
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"app": name},
				Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}}}
		if err := tc.Env.Client.Create(ctx, svc); err != nil {
			return err
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
		gw := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}, Spec: gwv1.GatewaySpec{
			GatewayClassName: "fleetlb",
			Listeners:        []gwv1.Listener{{Name: "http", Port: harness.HTTPPort, Protocol: gwv1.HTTPProtocolType}},
		}}
		hr := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}, Spec: gwv1.HTTPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: gwv1.ObjectName(name)}}},
			Rules: []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{
				Name: gwv1.ObjectName(name), Port: ptr.To(gwv1.PortNumber(80))}}}}}},
		}}
		applied := time.Now()
		for _, o := range []client.Object{gw, hr} {
			if err := tc.Env.Client.Create(ctx, o); err != nil {
				return err
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var vip string
			if err := harness.Eventually(time.Until(deadline), func() error {
				var got gwv1.Gateway
				if err := tc.Env.Client.Get(ctx, client.ObjectKeyFromObject(gw), &got); err != nil {
					return err
				}
				if !meta.IsStatusConditionTrue(got.Status.Conditions, string(gwv1.GatewayConditionProgrammed)) || len(got.Status.Addresses) == 0 {
					return fmt.Errorf("Gateway %s/%s is not Programmed with an address", tc.Name, name)
				}
				vip = got.Status.Addresses[0].Value
				return nil
			}); err != nil {
				errs <- err
				return
			}
			samples[i].address = time.Since(applied)
			to := netip.AddrPortFrom(netip.MustParseAddr(vip), harness.HTTPPort).String()
			c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
				DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, network, to)
				}}}
			for time.Now().Before(deadline) {
				// Any host: the route has no hostnames.
				if resp, err := c.Get(fmt.Sprintf("http://%s.anything.example/", name)); err == nil {
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK && resp.Header.Get("X-Echo-Node") == tc.Name+"-1" {
						samples[i].traffic = time.Since(applied)
						return
					}
				}
				time.Sleep(20 * time.Millisecond)
			}
			errs <- fmt.Errorf("%s/%s: no HTTP 200 through %s before the deadline", tc.Name, name, to)
		}()
	}
	wg.Wait()
	close(errs)
	if err := failed(h, errs); err != nil {
		return err
	}
	fmt.Printf("%d Gateways + hostname-less HTTPRoutes over 2 tenants, each on its own VIP (created back to back):\n", n)
	report(samples, "apply → Gateway Programmed + address", func(s sample) time.Duration { return s.address })
	report(samples, "apply → first HTTP 200 via its VIP", func(s sample) time.Duration { return s.traffic })
	return nil
}
