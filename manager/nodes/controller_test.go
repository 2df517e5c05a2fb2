package nodes

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/testenv"
	"github.com/fleetlb/fleetlb/manager/backends"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, testenv.Options{}, &env) }

var deny = backends.MustParsePrefixes("127.0.0.1/32", "169.254.0.0/16")

func TestRefusedAddressesAreReported(t *testing.T) {
	ctx := context.Background()
	mgr := env.NewManager(t)
	r := &Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("nodes"), Deny: deny}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, mgr)

	// Another tenant's pool and the fleet's VIP exist; the victim's nodes are on 127.0.2.0/24.
	for _, o := range []client.Object{
		&v1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: "victims-pool"}, Spec: v1.AddressPoolSpec{Addresses: []v1.AddressRange{"127.0.50.0/28"}}},
		&v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: v1.ProxyFleetSpec{VIP: "127.0.60.1", Exposure: v1.ExposureNone}},
		&v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "victim"}, Spec: v1.TenantSpec{AddressPool: "victims-pool", NodeCIDRs: []v1.CIDR{"127.0.2.0/24"}}},
		&v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "evil"}, Spec: v1.TenantSpec{AddressPool: "victims-pool", NodeCIDRs: []v1.CIDR{"127.0.0.0/16"}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: tenant.Namespace("evil")}},
	} {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	ns := tenant.Namespace("evil")
	tn := &v1.TenantNodes{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: v1.TenantNodesName}, Spec: v1.TenantNodesSpec{Nodes: []v1.TenantNode{
		{Name: "good", Addresses: []v1.IPAddress{"127.0.1.1"}},
		{Name: "admin", Addresses: []v1.IPAddress{"127.0.0.1", "169.254.169.254"}},
		{Name: "vips", Addresses: []v1.IPAddress{"127.0.50.3", "127.0.60.1"}},
		{Name: "far", Addresses: []v1.IPAddress{"10.0.0.1"}},
	}}}
	if err := env.Client.Create(ctx, tn); err != nil {
		t.Fatal(err)
	}

	get := func() *v1.TenantNodes {
		var got v1.TenantNodes
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(tn), &got); err != nil {
			t.Fatal(err)
		}
		return &got
	}
	reasons := func(s v1.TenantNodesStatus) []string {
		var out []string
		for _, r := range s.Refused {
			out = append(out, r.Node+"/"+r.Address+"="+r.Reason)
		}
		return out
	}
	want := []string{
		"admin/127.0.0.1=" + v1.RefusedDenied, "admin/169.254.169.254=" + v1.RefusedDenied,
		"vips/127.0.50.3=" + v1.RefusedAddressPool, "vips/127.0.60.1=" + v1.RefusedFleetAddress,
		"far/10.0.0.1=" + v1.RefusedOutsideNodeCIDRs,
	}
	testenv.Eventually(t, "refusals reported", func() error {
		got := get()
		c := meta.FindStatusCondition(got.Status.Conditions, v1.ConditionAccepted)
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != v1.ReasonNodesRefused || c.ObservedGeneration != got.Generation ||
			got.Status.Nodes != 4 || got.Status.Served != 1 || got.Status.RefusedCount != 5 || !slices.Equal(reasons(got.Status), want) {
			return fmt.Errorf("status %+v", got.Status)
		}
		return nil
	})
	var events []eventsv1.Event
	testenv.Eventually(t, "warning event", func() error {
		var evs eventsv1.EventList
		if err := env.Client.List(ctx, &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		events = slices.DeleteFunc(evs.Items, func(e eventsv1.Event) bool { return e.Regarding.Name != v1.TenantNodesName })
		// Usually one; a reconcile from a stale cache may repeat it.
		if len(events) == 0 {
			return fmt.Errorf("no event")
		}
		for _, e := range events {
			if e.Type != corev1.EventTypeWarning || e.Reason != v1.ReasonNodesRefused || !strings.Contains(e.Note, "127.0.0.1") {
				return fmt.Errorf("event %+v", e)
			}
		}
		return nil
	})
	// Nothing the tenant reads names another tenant or its objects.
	got := get()
	texts := []string{events[0].Note, meta.FindStatusCondition(got.Status.Conditions, v1.ConditionAccepted).Message}
	for _, r := range got.Status.Refused {
		texts = append(texts, r.Message)
	}
	for _, s := range texts {
		if strings.Contains(s, "victim") {
			t.Errorf("message names another tenant: %q", s)
		}
	}

	// A second pass over unchanged input writes nothing.
	direct := &Reconciler{Client: env.Client, Recorder: mgr.GetEventRecorder("nodes"), Deny: deny}
	if _, err := direct.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(tn)}); err != nil {
		t.Fatal(err)
	}
	if after := get(); after.ResourceVersion != got.ResourceVersion {
		t.Fatalf("unchanged status rewritten: %s → %s", got.ResourceVersion, after.ResourceVersion)
	}

	// The admin widens nodeCIDRs to 10.0.0.0/8 (the Tenant watch re-checks).
	var evil v1.Tenant
	if err := env.Client.Get(ctx, client.ObjectKey{Name: "evil"}, &evil); err != nil {
		t.Fatal(err)
	}
	evil.Spec.NodeCIDRs = append(evil.Spec.NodeCIDRs, "10.0.0.0/8")
	if err := env.Client.Update(ctx, &evil); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "10.0.0.1 served", func() error {
		if s := get().Status; s.Served != 2 || s.RefusedCount != 4 {
			return fmt.Errorf("status %+v", s)
		}
		return nil
	})

	// The tenant drops the refused addresses: Accepted again.
	got = get()
	got.Spec.Nodes = []v1.TenantNode{{Name: "good", Addresses: []v1.IPAddress{"127.0.1.1"}}}
	if err := env.Client.Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "accepted", func() error {
		g := get()
		if !meta.IsStatusConditionTrue(g.Status.Conditions, v1.ConditionAccepted) || g.Status.Served != 1 || g.Status.RefusedCount != 0 || len(g.Status.Refused) != 0 {
			return fmt.Errorf("status %+v", g.Status)
		}
		return nil
	})
}
