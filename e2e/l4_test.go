package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/ccm/service"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

func loadBalancerService(name string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: ptr.To(service.DefaultClass),
			Selector: map[string]string{"app": name}, Ports: ports},
	}
}

// TestL4ServicesGetAddressesThroughTheRealBinaries drives two tenants through
// the real manager and ccm processes: onboarding, node reporting, admission
// and IPAM, and the address back on each tenant's own Service.
func TestL4ServicesGetAddressesThroughTheRealBinaries(t *testing.T) {
	h := newHarness(t)
	f := check(h.StartFleet("127.0.50.1-127.0.50.9"))(t)
	a := check(f.AddTenant("a"))(t)
	b := check(f.AddTenant("b"))(t)
	if err := a.AddNode("a-1", "127.0.1.1", "z1"); err != nil {
		t.Fatal(err)
	}
	if err := b.AddNode("b-1", "127.0.2.1", "z1"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	web := loadBalancerService("web",
		corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromInt(8080), Protocol: corev1.ProtocolTCP},
		corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP})
	if err := a.Env.Client.Create(ctx, web); err != nil {
		t.Fatal(err)
	}
	if err := b.Env.Client.Create(ctx, loadBalancerService("web", corev1.ServicePort{Port: 80, Protocol: corev1.ProtocolTCP})); err != nil {
		t.Fatal(err)
	}
	va, vb := waitAddress(t, a, "web"), waitAddress(t, b, "web")
	pool := netip.MustParsePrefix("127.0.50.0/28")
	if !pool.Contains(va) || !pool.Contains(vb) || va == vb {
		t.Fatalf("addresses %s and %s: want two different addresses from the pool", va, vb)
	}

	// The management objects are admitted, and the tenant's node set arrived.
	var lb v1.LoadBalancer
	if err := f.Mgmt.Client.Get(ctx, client.ObjectKey{Namespace: tenant.Namespace("a"), Name: service.LoadBalancerName("default", "web")}, &lb); err != nil {
		t.Fatal(err)
	}
	if !meta.IsStatusConditionTrue(lb.Status.Conditions, v1.ConditionAccepted) || len(lb.Spec.Ports) != 2 {
		t.Fatalf("management LoadBalancer %+v", lb.Status)
	}
	eventually(t, "TenantNodes of a", 30*time.Second, func() error {
		var tn v1.TenantNodes
		if err := f.Mgmt.Client.Get(ctx, client.ObjectKey{Namespace: tenant.Namespace("a"), Name: v1.TenantNodesName}, &tn); err != nil {
			return err
		}
		if len(tn.Spec.Nodes) != 1 || tn.Spec.Nodes[0].Addresses[0] != "127.0.1.1" {
			return fmt.Errorf("nodes %+v", tn.Spec.Nodes)
		}
		return nil
	})

	// A requested address that tenant b already holds is refused on a's own Service.
	taken := loadBalancerService("taken", corev1.ServicePort{Port: 81, Protocol: corev1.ProtocolTCP})
	taken.Annotations = map[string]string{v1.AnnotationLoadBalancerIP: vb.String()}
	if err := a.Env.Client.Create(ctx, taken); err != nil {
		t.Fatal(err)
	}
	eventually(t, "AddressInUse event on the tenant Service", 60*time.Second, func() error {
		var evs corev1.EventList
		if err := a.Env.Client.List(ctx, &evs, client.InNamespace("default")); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == "taken" && e.Reason == v1.ReasonAddressInUse {
				return nil
			}
		}
		return fmt.Errorf("no AddressInUse event among %d", len(evs.Items))
	})

	// Deleting the Service releases the address, and a new Service can take it.
	if err := b.Env.Client.Delete(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "tenant b's Service gone", 60*time.Second, func() error {
		err := b.Env.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: "web"}, &corev1.Service{})
		if client.IgnoreNotFound(err) == nil && err != nil {
			return nil
		}
		return fmt.Errorf("still there (%v)", err)
	})
	if got := waitAddress(t, a, "taken"); got != vb {
		t.Fatalf("after release the requested %s went to %s", vb, got)
	}
}
