package snapshot

import (
	"context"
	"fmt"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/testenv"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// TestProgrammedInBulk: with a proxy connected, many LoadBalancers admitted
// at once become Programmed with one status write each (no "waiting for the
// proxies" first), written by server-side apply under the builder's field
// owner, and admission's condition is kept.
func TestProgrammedInBulk(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	ctx := context.Background()
	xds, conn := startXDS(t)
	mgr := env.NewManager(t)
	b := &Builder{Client: mgr.GetClient(), XDS: xds, Log: testr.New(t), BackendDeny: testDeny, StatusWorkers: 4}
	if err := b.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, mgr)
	p := &ackingProxy{last: map[string]*discoveryv3.DiscoveryResponse{}}
	p.run(t, conn, v1.DefaultFleetName)
	testenv.Eventually(t, "proxy connected", func() error {
		if xds.Proxies(v1.DefaultFleetName) != 1 {
			return fmt.Errorf("%d proxies", xds.Proxies(v1.DefaultFleetName))
		}
		return nil
	})

	must(t, env.Client.Create(ctx, &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: v1.TenantSpec{AddressPool: "p", NodeCIDRs: testNodeCIDRs}}))
	ns := tenant.Namespace("a")
	must(t, env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	must(t, env.Client.Create(ctx, &v1.TenantNodes{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: v1.TenantNodesName},
		Spec: v1.TenantNodesSpec{Cluster: "c", Nodes: []v1.TenantNode{{Name: "n1", Addresses: []v1.IPAddress{"127.0.1.1"}}}}}))

	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	must(t, err)
	w, err := wc.Watch(ctx, &v1.LoadBalancerList{}, client.InNamespace(ns))
	must(t, err)
	defer w.Stop()

	const n = 40
	for i := range n {
		lb := &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprint("lb", i)}, Spec: v1.LoadBalancerSpec{
			Source: v1.ServiceSource{Cluster: "c", Namespace: "default", Name: "s", UID: "u"},
			Ports:  []v1.LoadBalancerPort{{Port: 80, Protocol: v1.ProtocolTCP, NodePort: 30080}}}}
		must(t, env.Client.Create(ctx, lb))
		lb.Status.Addresses = []v1.Address{{IP: v1.IPAddress(fmt.Sprintf("127.0.40.%d", i+1)), IPMode: v1.IPModeProxy}}
		lb.Status.Conditions = []metav1.Condition{{Type: v1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: v1.ReasonAccepted, LastTransitionTime: metav1.Now(), ObservedGeneration: lb.Generation}}
		must(t, env.Client.Status().Update(ctx, lb))
	}

	// Every write of every LoadBalancer, in order, until all are Programmed.
	writes := map[string][]*metav1.Condition{} // name → Programmed after each write that changed it
	programmed := 0
	deadline := time.After(time.Minute)
	for programmed < n {
		var ev watch.Event
		select {
		case e, ok := <-w.ResultChan():
			if !ok {
				t.Fatal("watch closed")
			}
			ev = e
		case <-deadline:
			t.Fatalf("%d of %d LoadBalancers Programmed after a minute", programmed, n)
		}
		if ev.Type != watch.Modified {
			continue
		}
		lb := ev.Object.(*v1.LoadBalancer)
		c := meta.FindStatusCondition(lb.Status.Conditions, v1.ConditionProgrammed)
		if c == nil {
			continue
		}
		if !meta.IsStatusConditionTrue(lb.Status.Conditions, v1.ConditionAccepted) {
			t.Fatalf("%s: admission's condition lost: %+v", lb.Name, lb.Status.Conditions)
		}
		prev := writes[lb.Name]
		if len(prev) > 0 && prev[len(prev)-1].Status == c.Status && prev[len(prev)-1].Reason == c.Reason {
			continue
		}
		writes[lb.Name] = append(prev, c)
		if c.Status == metav1.ConditionTrue {
			programmed++
			owned := false
			for _, mf := range lb.ManagedFields {
				owned = owned || mf.Manager == FieldOwner && mf.Subresource == "status"
			}
			if !owned {
				t.Errorf("%s: Programmed not written by %s: %+v", lb.Name, FieldOwner, lb.ManagedFields)
			}
		}
	}
	for name, cs := range writes {
		if len(cs) != 1 {
			var seen []string
			for _, c := range cs {
				seen = append(seen, string(c.Status)+"/"+c.Reason)
			}
			t.Errorf("%s: Programmed written as %v, want once, True", name, seen)
		}
	}
}
