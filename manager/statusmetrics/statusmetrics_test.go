package statusmetrics

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/scheme"
)

func cond(typ string, status metav1.ConditionStatus, reason string, at time.Time) metav1.Condition {
	return metav1.Condition{Type: typ, Status: status, Reason: reason, LastTransitionTime: metav1.NewTime(at)}
}

// unix formats a time as the exposition format prints a float.
func unix(t time.Time) string { return strconv.FormatFloat(float64(t.Unix()), 'g', -1, 64) }

func TestCollect(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	objs := []client.Object{
		&v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: "ok"}, Status: v1.LoadBalancerStatus{Conditions: []metav1.Condition{
			cond(v1.ConditionAccepted, metav1.ConditionTrue, "Accepted", t0), cond(v1.ConditionProgrammed, metav1.ConditionTrue, "Programmed", t0)}}},
		&v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: "waiting"}, Status: v1.LoadBalancerStatus{Conditions: []metav1.Condition{
			cond(v1.ConditionAccepted, metav1.ConditionTrue, "Accepted", t0), cond(v1.ConditionProgrammed, metav1.ConditionFalse, "Pending", t0.Add(time.Minute))}}},
		// Accepted an hour ago, created two: waiting since the acceptance.
		&v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: "older", CreationTimestamp: metav1.NewTime(t0.Add(-2 * time.Hour))},
			Status: v1.LoadBalancerStatus{Conditions: []metav1.Condition{cond(v1.ConditionAccepted, metav1.ConditionTrue, "Accepted", t0.Add(-time.Hour))}}},
		// Not accepted: the tenant's to fix, not counted as waiting.
		&v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: "refused", CreationTimestamp: metav1.NewTime(t0.Add(-3 * time.Hour))}},
		&v1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-b", Name: "r"}, Status: v1.RouteStatus{Conditions: []metav1.Condition{
			cond(v1.ConditionAccepted, metav1.ConditionFalse, "HostnameNotAllowed", t0), cond(v1.ConditionProgrammed, metav1.ConditionFalse, "NotAccepted", t0)}}},
		// Refused for two hours, accepted since t0.
		&v1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-b", Name: "fixed"}, Status: v1.RouteStatus{Conditions: []metav1.Condition{
			cond(v1.ConditionAccepted, metav1.ConditionTrue, "Accepted", t0), cond(v1.ConditionProgrammed, metav1.ConditionFalse, "Pending", t0.Add(-2*time.Hour))}}},
		&v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Status: v1.TenantStatus{Conditions: []metav1.Condition{cond(v1.ConditionReady, metav1.ConditionTrue, "Ready", t0)}}},
		&v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: "edge"}, Status: v1.ProxyFleetStatus{Conditions: []metav1.Condition{cond(v1.ConditionProgrammed, metav1.ConditionFalse, "NACKed", t0)}}},
		&v1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: "public"}, Spec: v1.AddressPoolSpec{Addresses: []v1.AddressRange{"192.0.2.0/30"}},
			Status: v1.AddressPoolStatus{Allocated: 3, Available: 1}},
	}
	c := fake.NewClientBuilder().WithScheme(scheme.New()).WithObjects(objs...).WithStatusSubresource(objs...).Build()
	elected := make(chan struct{})
	col := &Collector{Reader: c, Elected: elected, Log: logr.Discard()}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(col)

	// A follower serves nothing.
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 0 {
		t.Fatalf("before the election: %d series, %v", n, err)
	}
	close(elected)
	want := `
# HELP fleetlb_address_pool_addresses Addresses of each AddressPool by state: allocated, or available for allocation.
# TYPE fleetlb_address_pool_addresses gauge
fleetlb_address_pool_addresses{pool="public",state="allocated"} 3
fleetlb_address_pool_addresses{pool="public",state="available"} 1
# HELP fleetlb_objects_not_programmed_since_timestamp_seconds Since when (Unix time) the longest-waiting accepted LoadBalancer or Route of the tenant has not been Programmed: the later of its Accepted and Programmed transitions (its creation when it has no Programmed condition). Objects not Accepted wait for their tenant, not for the fleet, and are not counted. Absent when every accepted object is Programmed.
# TYPE fleetlb_objects_not_programmed_since_timestamp_seconds gauge
fleetlb_objects_not_programmed_since_timestamp_seconds{kind="LoadBalancer",tenant="a"} ` + unix(t0.Add(-time.Hour)) + `
fleetlb_objects_not_programmed_since_timestamp_seconds{kind="Route",tenant="b"} ` + unix(t0) + `
# HELP fleetlb_proxyfleet_condition 1 for each condition of each ProxyFleet, with its status and reason.
# TYPE fleetlb_proxyfleet_condition gauge
fleetlb_proxyfleet_condition{condition="Programmed",fleet="edge",reason="NACKed",status="False"} 1
# HELP fleetlb_tenant_condition 1 for each condition of each Tenant, with its status and reason.
# TYPE fleetlb_tenant_condition gauge
fleetlb_tenant_condition{condition="Ready",reason="Ready",status="True",tenant="a"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "fleetlb_address_pool_addresses",
		"fleetlb_objects_not_programmed_since_timestamp_seconds", "fleetlb_proxyfleet_condition", "fleetlb_tenant_condition"); err != nil {
		t.Error(err)
	}
	counts := map[string]float64{
		`kind="LoadBalancer",tenant="a",condition="Programmed",status="True",reason="Programmed"`: 1,
		`kind="LoadBalancer",tenant="a",condition="Programmed",status="False",reason="Pending"`:   1,
		`kind="LoadBalancer",tenant="a",condition="Programmed",status="Unknown",reason="Pending"`: 2,
		`kind="LoadBalancer",tenant="a",condition="Accepted",status="True",reason="Accepted"`:     3,
		`kind="LoadBalancer",tenant="a",condition="Accepted",status="Unknown",reason="Pending"`:   1,
		`kind="Route",tenant="b",condition="Accepted",status="False",reason="HostnameNotAllowed"`: 1,
		`kind="Route",tenant="b",condition="Accepted",status="True",reason="Accepted"`:            1,
		`kind="Route",tenant="b",condition="ResolvedRefs",status="Unknown",reason="Pending"`:      2,
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "fleetlb_objects" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			got[`kind="`+l["kind"]+`",tenant="`+l["tenant"]+`",condition="`+l["condition"]+`",status="`+l["status"]+`",reason="`+l["reason"]+`"`] = m.GetGauge().GetValue()
		}
	}
	for k, v := range counts {
		if got[k] != v {
			t.Errorf("fleetlb_objects{%s} = %v, want %v", k, got[k], v)
		}
	}
}
