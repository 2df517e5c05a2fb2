package snapshot

import (
	"context"
	"fmt"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/testenv"
	"github.com/fleetlb/fleetlb/manager/admission"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// LoadBalancers of one tenant group with the same global name get one VIP from
// admission and one listener whose backend holds both clusters, by priority
// under the failover strategy; when one goes, the other keeps the address.
func TestGlobalLoadBalancersShareOneVIP(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	ctx := context.Background()
	xds, conn := startXDS(t)

	mgr := env.NewManager(t)
	if err := (&admission.LoadBalancerReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("admission")}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	if err := (&Builder{Client: mgr.GetClient(), XDS: xds, Log: testr.New(t), BackendDeny: testDeny}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, mgr)
	p := &ackingProxy{last: map[string]*discoveryv3.DiscoveryResponse{}}
	p.run(t, conn, v1.DefaultFleetName)

	if err := env.Client.Create(ctx, &v1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: "global-pool"},
		Spec: v1.AddressPoolSpec{Addresses: []v1.AddressRange{"127.0.41.1-127.0.41.5"}}}); err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"east", "west"} {
		ns := tenant.Namespace(name)
		for _, o := range []client.Object{
			&v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.TenantSpec{Group: "shop", AddressPool: "global-pool", NodeCIDRs: testNodeCIDRs}},
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
			&v1.TenantNodes{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: v1.TenantNodesName}, Spec: v1.TenantNodesSpec{Cluster: name,
				Nodes: []v1.TenantNode{{Name: "n1", Addresses: []v1.IPAddress{v1.IPAddress(fmt.Sprintf("127.0.%d.1", 42+i))}, Zone: "z1"}}}},
			&v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default.web"}, Spec: v1.LoadBalancerSpec{
				Source: v1.ServiceSource{Cluster: name, Namespace: "default", Name: "web", UID: "u-" + name},
				Ports:  []v1.LoadBalancerPort{{Port: 80, Protocol: v1.ProtocolTCP, NodePort: 30080}},
				Global: &v1.GlobalOptions{Name: "web", Strategy: v1.StrategyFailover, Priority: ptr.To(int32(i))},
			}},
		} {
			if err := env.Client.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
	}
	address := func(name string) string {
		var lb v1.LoadBalancer
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: tenant.Namespace(name), Name: "default.web"}, &lb); err != nil || len(lb.Status.Addresses) == 0 {
			return ""
		}
		return string(lb.Status.Addresses[0].IP)
	}
	testenv.Eventually(t, "both members share one address", func() error {
		if a, b := address("east"), address("west"); a == "" || a != b {
			return fmt.Errorf("east %q west %q", a, b)
		}
		return nil
	})
	vip := address("east")
	testenv.Eventually(t, "one listener, one backend with both clusters by priority", func() error {
		ls := p.listeners(t)
		if _, ok := ls["l4/tcp/"+vip+":80"]; !ok || len(ls) != 1 {
			return fmt.Errorf("listeners %v", keys(ls))
		}
		cla := p.endpoints(t)["global/group:shop/web/"+vip+"/tcp/80"]
		if cla == nil || len(cla.Endpoints) != 2 {
			return fmt.Errorf("load assignment %v", cla)
		}
		for _, loc := range cla.Endpoints {
			want := map[string]uint32{"east": 0, "west": 1}[loc.Locality.Region]
			if loc.Priority != want {
				return fmt.Errorf("%s at priority %d, want %d", loc.Locality.Region, loc.Priority, want)
			}
		}
		return nil
	})

	if err := env.Client.Delete(ctx, &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: tenant.Namespace("east"), Name: "default.web"}}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "west alone keeps the address", func() error {
		cla := p.endpoints(t)["global/group:shop/web/"+vip+"/tcp/80"]
		if cla == nil || len(cla.Endpoints) != 1 || cla.Endpoints[0].Locality.Region != "west" || cla.Endpoints[0].Priority != 0 {
			return fmt.Errorf("load assignment %v", cla)
		}
		if got := address("west"); got != vip {
			return fmt.Errorf("west's address %q, want %s", got, vip)
		}
		return nil
	})
}
