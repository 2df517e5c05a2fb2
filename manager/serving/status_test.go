package serving

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/testenv"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, testenv.Options{}, &env) }

func start(t *testing.T) (*Loads, *Reconciler) {
	t.Helper()
	mgr := env.NewManager(t)
	loads := NewLoads()
	r := &Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("serving"), Loads: loads}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, mgr)
	return loads, r
}

func mkTenant(t *testing.T, name, group string) string {
	t.Helper()
	ctx := context.Background()
	if err := env.Client.Create(ctx, &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.TenantSpec{AddressPool: "p", Group: group}}); err != nil {
		t.Fatal(err)
	}
	ns := tenant.Namespace(name)
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	return ns
}

// mkGlobalLB makes an admitted LoadBalancer of a global name with strategy failover.
func mkGlobalLB(t *testing.T, ns, cluster, global, vip string, priority int32) {
	t.Helper()
	ctx := context.Background()
	lb := &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: global}, Spec: v1.LoadBalancerSpec{
		Source: v1.ServiceSource{Cluster: cluster, Namespace: "default", Name: global, UID: "u-" + ns},
		Ports:  []v1.LoadBalancerPort{{Port: 80, Protocol: v1.ProtocolTCP, NodePort: 30080}},
		Global: &v1.GlobalOptions{Name: global, Strategy: v1.StrategyFailover, Priority: ptr.To(priority)},
	}}
	if err := env.Client.Create(ctx, lb); err != nil {
		t.Fatal(err)
	}
	lb.Status.Addresses = []v1.Address{{IP: v1.IPAddress(vip), IPMode: v1.IPModeProxy}}
	lb.Status.Conditions = []metav1.Condition{{Type: v1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: v1.ReasonAccepted, LastTransitionTime: metav1.Now(), ObservedGeneration: lb.Generation}}
	if err := env.Client.Status().Update(ctx, lb); err != nil {
		t.Fatal(err)
	}
}

func report(backend string, byCluster map[string]uint64) []*endpointv3.ClusterStats {
	cs := &endpointv3.ClusterStats{ClusterName: backend}
	for c, n := range byCluster {
		cs.UpstreamLocalityStats = append(cs.UpstreamLocalityStats, &endpointv3.UpstreamLocalityStats{
			Locality: &corev3.Locality{Region: c, Zone: "z1"}, TotalIssuedRequests: n + 1, TotalSuccessfulRequests: n, TotalErrorRequests: 1})
	}
	return []*endpointv3.ClusterStats{cs}
}

func servingCondition(t *testing.T, ns, name string) *metav1.Condition {
	t.Helper()
	var lb v1.LoadBalancer
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &lb); err != nil {
		t.Fatal(err)
	}
	return meta.FindStatusCondition(lb.Status.Conditions, v1.ConditionServing)
}

func expectServing(t *testing.T, ns, name string, status metav1.ConditionStatus, reason string) {
	t.Helper()
	testenv.Eventually(t, fmt.Sprintf("%s/%s Serving=%s %s", ns, name, status, reason), func() error {
		c := servingCondition(t, ns, name)
		if c == nil || c.Status != status || c.Reason != reason {
			return fmt.Errorf("Serving condition %+v", c)
		}
		return nil
	})
}

func expectEvent(t *testing.T, ns, name, typ, reason string) {
	t.Helper()
	testenv.Eventually(t, fmt.Sprintf("%s event %s on %s/%s", typ, reason, ns, name), func() error {
		var evs eventsv1.EventList
		if err := env.Client.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Regarding.Name == name && e.Type == typ && e.Reason == reason {
				return nil
			}
		}
		var seen []string
		for _, e := range evs.Items {
			seen = append(seen, e.Regarding.Name+":"+e.Type+":"+e.Reason+":"+e.Note)
		}
		return fmt.Errorf("none among %d events %v", len(evs.Items), seen)
	})
}

// TestServingFollowsLoadReports: two clusters of group shop serve global
// name web with strategy failover. Reports of traffic to east make east
// Serving and west a Standby; when the traffic moves to west, east is
// FailedOver (a warning event) and west Serving; a window without traffic
// changes nothing. A tenant of another group with the same global name,
// address and even cluster name gets no condition: its backend is another.
func TestServingFollowsLoadReports(t *testing.T) {
	loads, r := start(t)
	east, west, evil := mkTenant(t, "east", "shop"), mkTenant(t, "west", "shop"), mkTenant(t, "evil", "other")
	mkGlobalLB(t, east, "east", "web", "10.9.0.1", 0)
	mkGlobalLB(t, west, "west", "web", "10.9.0.1", 1)
	mkGlobalLB(t, evil, "east", "web", "10.9.0.1", 0) // the attacker names its cluster like east's
	backend := "global/group:shop/web/10.9.0.1/tcp/80"

	loads.Record("fleet-a", 1, report(backend, map[string]uint64{"east": 40}))
	expectServing(t, east, "web", metav1.ConditionTrue, v1.ReasonServing)
	expectServing(t, west, "web", metav1.ConditionFalse, v1.ReasonStandby)
	if g := testutil.ToFloat64(r.gauge.WithLabelValues("fleet-a", "web", "east")); g != 1 {
		t.Fatalf("fleetlb_global_serving for east = %v, want 1", g)
	}

	loads.Record("fleet-a", 1, report(backend, map[string]uint64{"east": 3, "west": 30}))
	loads.Record("fleet-a", 1, report(backend, map[string]uint64{"west": 50}))
	expectServing(t, east, "web", metav1.ConditionFalse, v1.ReasonFailedOver)
	expectServing(t, west, "web", metav1.ConditionTrue, v1.ReasonServing)
	expectEvent(t, east, "web", corev1.EventTypeWarning, v1.ReasonFailedOver)
	expectEvent(t, west, "web", corev1.EventTypeNormal, v1.ReasonServing)
	testenv.Eventually(t, "gauge follows", func() error {
		if e, w := testutil.ToFloat64(r.gauge.WithLabelValues("fleet-a", "web", "east")), testutil.ToFloat64(r.gauge.WithLabelValues("fleet-a", "web", "west")); e != 0 || w != 1 {
			return fmt.Errorf("east %v, west %v; want 0 and 1", e, w)
		}
		return nil
	})

	// No traffic in a window: where the last traffic went still serves.
	loads.Record("fleet-a", 1, nil)
	if c := servingCondition(t, west, "web"); c == nil || c.Status != metav1.ConditionTrue {
		t.Fatalf("after an idle window west's Serving is %+v", c)
	}
	if c := servingCondition(t, evil, "web"); c != nil {
		t.Fatalf("a tenant of another group got %+v from group shop's traffic", c)
	}
	// Messages name the object's own cluster only.
	if c := servingCondition(t, east, "web"); c == nil || contains(c.Message, "west") {
		t.Fatalf("east's message names another cluster: %+v", c)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
