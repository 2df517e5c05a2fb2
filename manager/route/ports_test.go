package route

import (
	"context"
	"fmt"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// TestRouteStatusCarriesTheFleetsPorts: an admitted Route's status names the
// ports the fleet serves it on (HTTP, and HTTPS when it has TLS), follows a
// change of the fleet's ports, and a refused Route names none.
func TestRouteStatusCarriesTheFleetsPorts(t *testing.T) {
	start(t)
	ctx := context.Background()
	fleet, vip, u := fixture(t)
	var pf v1.ProxyFleet
	if err := env.Client.Get(ctx, client.ObjectKey{Name: fleet}, &pf); err != nil {
		t.Fatal(err)
	}
	pf.Spec.HTTP, pf.Spec.HTTPS = &v1.FleetListener{Port: 8080}, &v1.FleetListener{Port: 8443}
	if err := env.Client.Update(ctx, &pf); err != nil {
		t.Fatal(err)
	}
	dom := "p-" + u + ".example.com"
	ns := mkTenant(t, "tp-"+u, fleet, "", v1.TenantLimits{}, v1.Hostname("*."+dom))
	plain, secure := v1.Hostname("plain."+dom), v1.Hostname("secure."+dom)
	mkRoute(t, ns, "plain", nil, plain)
	mkRoute(t, ns, "secure", func(rt *v1.Route) {
		rt.Spec.TLS = []v1.RouteTLS{{Hostnames: []v1.Hostname{secure}, SecretName: "cert"}}
	}, secure)
	mkRoute(t, ns, "refused", nil, "elsewhere.example.org")

	ports := func(want ...v1.RoutePort) func(*v1.Route) error {
		return func(rt *v1.Route) error {
			if !slices.Equal(rt.Status.Ports, want) {
				return fmt.Errorf("ports %v, want %v", rt.Status.Ports, want)
			}
			return nil
		}
	}
	http8080 := v1.RoutePort{Port: 8080, Protocol: v1.RoutePortHTTP}
	expect(t, ns, "plain", "the HTTP port", func(rt *v1.Route) error { return all(addr(rt, vip), ports(http8080)(rt)) })
	expect(t, ns, "secure", "the HTTP and HTTPS ports", ports(http8080, v1.RoutePort{Port: 8443, Protocol: v1.RoutePortHTTPS}))
	expect(t, ns, "refused", "no ports", func(rt *v1.Route) error {
		return all(cond(rt, v1.ConditionAccepted, metav1.ConditionFalse, v1.ReasonHostnameNotAllowed), ports()(rt))
	})

	if err := env.Client.Get(ctx, client.ObjectKey{Name: fleet}, &pf); err != nil {
		t.Fatal(err)
	}
	pf.Spec.HTTPS = &v1.FleetListener{Port: 9443}
	if err := env.Client.Update(ctx, &pf); err != nil {
		t.Fatal(err)
	}
	expect(t, ns, "secure", "the new HTTPS port", ports(http8080, v1.RoutePort{Port: 9443, Protocol: v1.RoutePortHTTPS}))
}
