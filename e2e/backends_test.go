package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/ccm/nodes"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// TestL4BackendsConfined: a tenant whose Nodes claim loopback and an address
// outside its nodeCIDRs gets traffic only on its real node, sees the refusal
// on TenantNodes and on its own Nodes, and a Service whose node port lies
// outside its nodePortRange is refused on the Service.
func TestL4BackendsConfined(t *testing.T) {
	h := newHarness(t)
	f := check(h.StartFleet("127.0.75.1-127.0.75.8"))(t)
	check(f.StartProxy(true))(t)
	a := check(f.AddTenantWith("a", v1.TenantSpec{AddressPool: "vips", NodeCIDRs: []v1.CIDR{"127.0.12.0/24"},
		NodePortRange: &v1.PortRange{Min: 30000, Max: 32000}}))(t)
	ctx := context.Background()
	// Echo servers answer on every claimed address: if the fleet sent traffic
	// to a refused one, the answer would name that node.
	aNodes := map[string]string{"a-1": "127.0.12.1", "a-loopback": "127.0.0.1", "a-elsewhere": "127.0.13.1"}
	for n, ip := range aNodes {
		if err := a.AddNode(n, ip, "z1"); err != nil {
			t.Fatal(err)
		}
	}
	web := loadBalancerService("web", corev1.ServicePort{Port: 8080, Protocol: corev1.ProtocolTCP, NodePort: 30123})
	if err := a.Env.Client.Create(ctx, web); err != nil {
		t.Fatal(err)
	}
	va := waitAddress(t, a, "web")
	if err := a.ServeNodePorts("default", "web", aNodes); err != nil {
		t.Fatal(err)
	}
	servedExactlyBy(t, "a's web by its one allowed node", netip.AddrPortFrom(va, 8080).String(), 60*time.Second, "a-1")

	eventually(t, "refusals on TenantNodes", 30*time.Second, func() error {
		var tn v1.TenantNodes
		if err := f.Mgmt.Client.Get(ctx, client.ObjectKey{Namespace: tenant.Namespace("a"), Name: v1.TenantNodesName}, &tn); err != nil {
			return err
		}
		var got []string
		for _, r := range tn.Status.Refused {
			got = append(got, r.Node+"="+r.Reason)
		}
		slices.Sort(got)
		want := []string{"a-elsewhere=" + v1.RefusedOutsideNodeCIDRs, "a-loopback=" + v1.RefusedDenied}
		if c := meta.FindStatusCondition(tn.Status.Conditions, v1.ConditionAccepted); c == nil || c.Reason != v1.ReasonNodesRefused || !slices.Equal(got, want) || tn.Status.Served != 1 {
			return fmt.Errorf("status %+v", tn.Status)
		}
		return nil
	})
	waitEvent(t, a, "a-loopback", nodes.ReasonNodeAddressRefused)
	waitEvent(t, a, "a-elsewhere", nodes.ReasonNodeAddressRefused)

	high := loadBalancerService("high", corev1.ServicePort{Port: 8081, Protocol: corev1.ProtocolTCP, NodePort: 32700})
	if err := a.Env.Client.Create(ctx, high); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, a, "high", v1.ReasonNodePortNotAllowed)
}
