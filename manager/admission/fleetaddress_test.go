package admission

import (
	"context"
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/testenv"
)

func fleetAddress(t *testing.T, name, want string) {
	t.Helper()
	testenv.Eventually(t, "fleet "+name+" address "+want, func() error {
		var f v1.ProxyFleet
		if err := env.Client.Get(context.Background(), client.ObjectKey{Name: name}, &f); err != nil {
			return err
		}
		got := ""
		if len(f.Status.Addresses) == 1 {
			got = string(f.Status.Addresses[0].IP)
		}
		if got != want || len(f.Status.Addresses) > 1 {
			return fmt.Errorf("addresses %+v", f.Status.Addresses)
		}
		return nil
	})
}

// A fleet's shared VIP comes from the same allocator as LoadBalancers: allocated
// from its pool, or its spec.vip reserved there; never handed to a LoadBalancer.
func TestFleetVIPSharesTheAllocator(t *testing.T) {
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
	ns, pool := setup(t, []v1.AddressRange{"127.0.40.1-127.0.40.3"}, v1.TenantLimits{})

	if err := env.Client.Create(ctx, &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: "pooled"}, Spec: v1.ProxyFleetSpec{AddressPool: pool, Exposure: v1.ExposureNone}}); err != nil {
		t.Fatal(err)
	}
	fleetAddress(t, "pooled", "127.0.40.1")
	if err := env.Client.Create(ctx, &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: "pinned"}, Spec: v1.ProxyFleetSpec{VIP: "127.0.40.3", Exposure: v1.ExposureNone}}); err != nil {
		t.Fatal(err)
	}
	fleetAddress(t, "pinned", "127.0.40.3")

	createLB(t, ns, "a", "")
	admitted(t, ns, "a", "127.0.40.2")
	createLB(t, ns, "b", "127.0.40.3")
	if msg := admitted(t, ns, "b", "reason:"+v1.ReasonAddressInUse); !strings.Contains(msg, "shared VIP of proxy fleet pinned") {
		t.Errorf("AddressInUse message does not name the fleet: %q", msg)
	}
	createLB(t, ns, "c", "")
	admitted(t, ns, "c", "reason:"+v1.ReasonPoolExhausted)

	// Deleting the pinned fleet frees its address for the LoadBalancer asking
	// for it. (c goes first: a waiting LoadBalancer without a request could
	// otherwise take the freed address before b is retried.)
	if err := env.Client.Delete(ctx, &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "c"}}); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Delete(ctx, &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: "pinned"}}); err != nil {
		t.Fatal(err)
	}
	admitted(t, ns, "b", "127.0.40.3")
}
