package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/e2e/harness"
)

// TestL4GlobalFailoverAcrossClusters: two clusters of one tenant group serve the
// same global name; they share one VIP, the priority-0 cluster takes the traffic,
// and when its node stops answering the fleet fails over to the other cluster in
// the data plane (health checks, no DNS), and back when it recovers.
func TestL4GlobalFailoverAcrossClusters(t *testing.T) {
	h := newHarness(t)
	f := check(h.StartFleet("127.0.90.1-127.0.90.8"))(t)
	check(f.StartProxy(true))(t)
	ctx := context.Background()
	nodes := map[string]map[string]string{"east": {"east-1": "127.0.9.1"}, "west": {"west-1": "127.0.10.1"}}
	tenants := map[string]*harness.Tenant{}
	var vips []netip.Addr
	for i, name := range []string{"east", "west"} {
		tc := check(f.AddTenantWith(name, v1.TenantSpec{Group: "shop", AddressPool: "vips"}))(t)
		tenants[name] = tc
		for n, ip := range nodes[name] {
			if err := tc.AddNode(n, ip, "z1"); err != nil {
				t.Fatal(err)
			}
		}
		svc := loadBalancerService("web", corev1.ServicePort{Port: 8080, Protocol: corev1.ProtocolTCP})
		svc.Annotations = map[string]string{v1.AnnotationGlobalName: "web", v1.AnnotationStrategy: "failover", v1.AnnotationPriority: fmt.Sprint(i)}
		if err := tc.Env.Client.Create(ctx, svc); err != nil {
			t.Fatal(err)
		}
		vips = append(vips, waitAddress(t, tc, "web"))
		if err := tc.ServeNodePorts("default", "web", nodes[name]); err != nil {
			t.Fatal(err)
		}
	}
	if vips[0] != vips[1] {
		t.Fatalf("the two clusters got %s and %s, want one global VIP", vips[0], vips[1])
	}
	addr := netip.AddrPortFrom(vips[0], 8080).String()
	servedExactlyBy(t, "the priority-0 cluster serves", addr, 60*time.Second, "east-1")

	if err := tenants["east"].StopNodePorts("east-1"); err != nil {
		t.Fatal(err)
	}
	servedExactlyBy(t, "failover to the priority-1 cluster", addr, 90*time.Second, "west-1")

	if err := tenants["east"].ServeNodePorts("default", "web", nodes["east"]); err != nil {
		t.Fatal(err)
	}
	servedExactlyBy(t, "back to the priority-0 cluster", addr, 90*time.Second, "east-1")
}
