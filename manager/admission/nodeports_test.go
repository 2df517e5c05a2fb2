package admission

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

func TestNodePortsOutsideTheTenantRangeAreRefused(t *testing.T) {
	startAdmission(t)
	ctx := context.Background()
	ns, _ := setup(t, []v1.AddressRange{"127.0.36.0/29"}, v1.TenantLimits{})
	mk := func(name string, nodePort int32, hcPort *v1.PortNumber) *v1.LoadBalancer {
		lb := &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: v1.LoadBalancerSpec{
			Source: v1.ServiceSource{Cluster: "c", Namespace: "default", Name: name, UID: "u-" + name},
			Ports:  []v1.LoadBalancerPort{{Port: 80, Protocol: v1.ProtocolTCP, NodePort: v1.PortNumber(nodePort)}},
		}}
		if hcPort != nil {
			lb.Spec.HealthCheck = &v1.HealthCheck{Type: v1.HealthCheckTCP, NodePort: hcPort}
		}
		if err := env.Client.Create(ctx, lb); err != nil {
			t.Fatal(err)
		}
		return lb
	}
	// The proxy's admin port, sshd, ... on the node are not NodePorts.
	mk("admin", 9901, nil)
	mk("hc", 30080, ptr.To(v1.PortNumber(22)))
	mk("ok", 30080, nil)
	if msg := admitted(t, ns, "admin", "reason:"+v1.ReasonNodePortNotAllowed); !strings.Contains(msg, "9901") || !strings.Contains(msg, "30000-32767") {
		t.Errorf("message %q", msg)
	}
	if msg := admitted(t, ns, "hc", "reason:"+v1.ReasonNodePortNotAllowed); !strings.Contains(msg, "health check") {
		t.Errorf("message %q", msg)
	}
	admitted(t, ns, "ok", "127.0.36.1")

	// The admin moves the range: "ok" is refused and holds no address,
	// "admin" is admitted.
	name, _ := tenant.Of(ns)
	setRange := func(lo, hi int32) {
		var tn v1.Tenant
		if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, &tn); err != nil {
			t.Fatal(err)
		}
		tn.Spec.NodePortRange = &v1.PortRange{Min: lo, Max: hi}
		if err := env.Client.Update(ctx, &tn); err != nil {
			t.Fatal(err)
		}
	}
	setRange(9000, 9999)
	admitted(t, ns, "ok", "reason:"+v1.ReasonNodePortNotAllowed)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var lb v1.LoadBalancer
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "admin"}, &lb); err != nil {
			t.Fatal(err)
		}
		if meta.IsStatusConditionTrue(lb.Status.Conditions, v1.ConditionAccepted) && len(lb.Status.Addresses) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("admin not admitted: %+v", lb.Status)
		}
	}
	var ok v1.LoadBalancer
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "ok"}, &ok); err != nil || len(ok.Status.Addresses) != 0 {
		t.Fatalf("refused LoadBalancer still holds %v (%v)", ok.Status.Addresses, err)
	}
}
