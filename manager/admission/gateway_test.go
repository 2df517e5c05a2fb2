package admission

import (
	"context"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/testenv"
)

func createGatewayLB(t *testing.T, ns, name, requested string) {
	t.Helper()
	lb := &v1.LoadBalancer{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1.LoadBalancerSpec{
			Source:         v1.ServiceSource{Kind: v1.SourceGateway, Cluster: "c", Namespace: "default", Name: name, UID: "u-" + name},
			Listeners:      []v1.GatewayListener{{Name: "http", Port: 80, Protocol: v1.ListenerHTTP}},
			LoadBalancerIP: v1.IPAddress(requested),
		},
	}
	if err := env.Client.Create(context.Background(), lb); err != nil {
		t.Fatal(err)
	}
}

// A Gateway's LoadBalancer is admitted like a Service's: a VIP from the
// tenant's pool, counted against its limits; a requested address outside the
// pool, held by another, or the fleet's shared VIP is refused with a reason.
func TestGatewayAddresses(t *testing.T) {
	ctx := context.Background()
	mgr := env.NewManager(t)
	lb := &LoadBalancerReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("admission")}
	if err := lb.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	if err := (&FleetAddressReconciler{LB: lb}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, mgr)
	ns, _ := setup(t, []v1.AddressRange{"127.0.41.1-127.0.41.4"}, v1.TenantLimits{MaxAddresses: ptr.To(int32(5))})
	if err := env.Client.Create(ctx, &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: "gwshared"}, Spec: v1.ProxyFleetSpec{VIP: "127.0.41.4", Exposure: v1.ExposureNone}}); err != nil {
		t.Fatal(err)
	}
	fleetAddress(t, "gwshared", "127.0.41.4")

	createGatewayLB(t, ns, "gateway.default.a", "")
	admitted(t, ns, "gateway.default.a", "127.0.41.1")
	createGatewayLB(t, ns, "gateway.default.b", "127.0.41.3")
	admitted(t, ns, "gateway.default.b", "127.0.41.3")
	createGatewayLB(t, ns, "gateway.default.outside", "127.0.42.9")
	if msg := admitted(t, ns, "gateway.default.outside", "reason:"+v1.ReasonAddressNotAvailable); !strings.Contains(msg, "not in address pool") {
		t.Errorf("message %q", msg)
	}
	createGatewayLB(t, ns, "gateway.default.shared", "127.0.41.4")
	if msg := admitted(t, ns, "gateway.default.shared", "reason:"+v1.ReasonAddressInUse); !strings.Contains(msg, "shared VIP") {
		t.Errorf("a Gateway on the fleet's shared VIP: %q", msg)
	}
	createGatewayLB(t, ns, "gateway.default.taken", "127.0.41.1")
	admitted(t, ns, "gateway.default.taken", "reason:"+v1.ReasonAddressInUse)
	// A Service's LoadBalancer counts against the same maxAddresses.
	createLB(t, ns, "svc", "")
	admitted(t, ns, "svc", "reason:"+v1.ReasonLimitExceeded)
}

// The API keeps the two kinds apart: a Gateway's LoadBalancer has
// listeners and no ports, a Service's ports and no listeners.
func TestGatewayLoadBalancerShape(t *testing.T) {
	ctx := context.Background()
	ns, _ := setup(t, []v1.AddressRange{"127.0.43.1"}, v1.TenantLimits{})
	bad := []v1.LoadBalancerSpec{
		{Source: v1.ServiceSource{Kind: v1.SourceGateway, Cluster: "c", Namespace: "d", Name: "g", UID: "u"},
			Ports: []v1.LoadBalancerPort{{Port: 80, Protocol: v1.ProtocolTCP, NodePort: 30080}}},
		{Source: v1.ServiceSource{Cluster: "c", Namespace: "d", Name: "s", UID: "u"},
			Ports:     []v1.LoadBalancerPort{{Port: 80, Protocol: v1.ProtocolTCP, NodePort: 30080}},
			Listeners: []v1.GatewayListener{{Name: "http", Port: 80, Protocol: v1.ListenerHTTP}}},
		{Source: v1.ServiceSource{Cluster: "c", Namespace: "d", Name: "s", UID: "u"}},
	}
	for i, spec := range bad {
		err := env.Client.Create(ctx, &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bad-" + string(rune('a'+i))}, Spec: spec})
		if err == nil || !strings.Contains(err.Error(), "a Gateway's has listeners and no ports") {
			t.Errorf("spec %d accepted or refused for another reason: %v", i, err)
		}
	}
}
