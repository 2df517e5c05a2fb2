package nodes

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/testenv"
)

const mgmtNS = "tenant-a"

func TestTenantNodesFollowNodes(t *testing.T) {
	tenant := testenv.Start(t, testenv.Options{NoCRDs: true})
	mgmtEnv := testenv.Start(t, testenv.Options{})
	ctx := context.Background()
	if err := mgmtEnv.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: mgmtNS}}); err != nil {
		t.Fatal(err)
	}
	mgr := tenant.NewManager(t)
	mgmt, err := cluster.New(mgmtEnv.Config, func(o *cluster.Options) {
		o.Scheme = mgmtEnv.Scheme
		o.Cache.DefaultNamespaces = map[string]cache.Config{mgmtNS: {}}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := mgr.Add(mgmt); err != nil {
		t.Fatal(err)
	}
	r := &Reconciler{Tenant: mgr.GetClient(), Mgmt: mgmt.GetClient(), Namespace: mgmtNS, ClusterName: "cluster-a", Recorder: mgr.GetEventRecorder("ccm")}
	if err := r.SetupWithManager(mgr, mgmt); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, mgr)

	node := func(name, ip, zone string, labels map[string]string) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
		if zone != "" {
			if n.Labels == nil {
				n.Labels = map[string]string{}
			}
			n.Labels[corev1.LabelTopologyZone] = zone
		}
		if err := tenant.Client.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeHostName, Address: name}}
		if err := tenant.Client.Status().Update(ctx, n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	expect := func(want []v1.TenantNode) *v1.TenantNodes {
		t.Helper()
		var tn v1.TenantNodes
		var err error
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if err = mgmtEnv.Client.Get(ctx, client.ObjectKey{Namespace: mgmtNS, Name: v1.TenantNodesName}, &tn); err == nil &&
				equality.Semantic.DeepEqual(tn.Spec.Nodes, want) && tn.Spec.Cluster == "cluster-a" {
				return &tn
			}
		}
		t.Fatalf("TenantNodes = %+v (%v), want %+v", tn.Spec, err, want)
		return nil
	}

	node("n2", "127.0.1.2", "z2", nil)
	n1 := node("n1", "127.0.1.1", "z1", nil)
	node("n3", "127.0.1.3", "z1", map[string]string{LabelExclude: ""})
	tn := expect([]v1.TenantNode{
		{Name: "n1", Addresses: []v1.IPAddress{"127.0.1.1"}, Zone: "z1"},
		{Name: "n2", Addresses: []v1.IPAddress{"127.0.1.2"}, Zone: "z2"},
	})

	// A Node change that does not matter to us writes nothing.
	rv := tn.ResourceVersion
	n1.Labels["unrelated"] = "x"
	if err := tenant.Client.Update(ctx, n1); err != nil {
		t.Fatal(err)
	}
	// A change that matters follows, and proves the unrelated one was processed before it.
	node("n4", "127.0.1.4", "", nil)
	tn = expect([]v1.TenantNode{
		{Name: "n1", Addresses: []v1.IPAddress{"127.0.1.1"}, Zone: "z1"},
		{Name: "n2", Addresses: []v1.IPAddress{"127.0.1.2"}, Zone: "z2"},
		{Name: "n4", Addresses: []v1.IPAddress{"127.0.1.4"}},
	})
	if got := tn.Generation; got != 2 {
		t.Fatalf("TenantNodes rewritten %d times for 2 relevant changes (resourceVersion was %s)", got, rv)
	}

	// Excluding and deleting nodes removes them; drift in the management object is corrected.
	n1.Labels[LabelExclude] = "true"
	if err := tenant.Client.Update(ctx, n1); err != nil {
		t.Fatal(err)
	}
	if err := tenant.Client.Delete(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2"}}); err != nil {
		t.Fatal(err)
	}
	tn = expect([]v1.TenantNode{{Name: "n4", Addresses: []v1.IPAddress{"127.0.1.4"}}})
	tn.Spec.Nodes = nil
	if err := mgmtEnv.Client.Update(ctx, tn); err != nil {
		t.Fatal(err)
	}
	tn = expect([]v1.TenantNode{{Name: "n4", Addresses: []v1.IPAddress{"127.0.1.4"}}})

	// The manager refuses n4's address: the tenant sees it on its Node.
	tn.Status = v1.TenantNodesStatus{ObservedGeneration: tn.Generation, RefusedCount: 1, Refused: []v1.RefusedAddress{
		{Node: "n4", Address: "127.0.1.4", Reason: v1.RefusedOutsideNodeCIDRs, Message: "127.0.1.4 is outside the tenant's nodeCIDRs (10.0.0.0/8)"}}}
	if err := mgmtEnv.Client.Status().Update(ctx, tn); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "event on node n4", func() error {
		var evs eventsv1.EventList
		if err := tenant.Client.List(ctx, &evs); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Regarding.Kind == "Node" && e.Regarding.Name == "n4" && e.Reason == ReasonNodeAddressRefused &&
				e.Type == corev1.EventTypeWarning && strings.Contains(e.Note, "outside the tenant's nodeCIDRs") {
				return nil
			}
		}
		return fmt.Errorf("no %s event on n4 among %d events", ReasonNodeAddressRefused, len(evs.Items))
	})
}
