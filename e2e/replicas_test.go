package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/ccm/service"
	"github.com/fleetlb/fleetlb/e2e/harness"
	"github.com/fleetlb/fleetlb/manager/tenant"
	"github.com/fleetlb/fleetlb/manager/xdsreport"
)

// TestL4ProgrammedWithTheProxyOnAStandbyReplica: two manager replicas, the
// only proxy connected to the one that is not the leader. The leader, which
// writes Programmed, learns from the standby's report Lease that the proxy
// acknowledged the configuration.
func TestL4ProgrammedWithTheProxyOnAStandbyReplica(t *testing.T) {
	h := newHarness(t)
	f := check(h.StartFleetWith(harness.FleetOptions{LeaderElect: true}, "127.0.95.1-127.0.95.8"))(t)
	ctx := context.Background()
	eventually(t, "manager-1 leads", 60*time.Second, func() error {
		var l coordinationv1.Lease
		if err := f.Mgmt.Client.Get(ctx, client.ObjectKey{Namespace: harness.FleetNamespace, Name: "fleetlb-manager.fleetlb.io"}, &l); err != nil {
			return err
		}
		if ptr.Deref(l.Spec.HolderIdentity, "") == "" {
			return fmt.Errorf("no holder")
		}
		return nil
	})
	_, standbyXDS := check2(f.StartStandby("manager-2"))(t)
	check(f.StartProxyAt(standbyXDS, true))(t)

	a := check(f.AddTenant("a"))(t)
	if err := a.AddNode("a-1", "127.0.9.1", "z1"); err != nil {
		t.Fatal(err)
	}
	if err := a.Env.Client.Create(ctx, loadBalancerService("web", corev1.ServicePort{Port: 8080, Protocol: corev1.ProtocolTCP})); err != nil {
		t.Fatal(err)
	}
	vip := waitAddress(t, a, "web")
	if err := a.ServeNodePorts("default", "web", map[string]string{"a-1": "127.0.9.1"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "traffic through the standby's proxy", 60*time.Second, func() error {
		id, err := dialIdentity(fmt.Sprintf("%s:8080", vip))
		if err != nil {
			return err
		}
		if id.Cluster != "a" {
			return fmt.Errorf("answered by %+v", id)
		}
		return nil
	})
	eventually(t, "the standby reports its proxy", 30*time.Second, func() error {
		var l coordinationv1.Lease
		if err := f.Mgmt.Client.Get(ctx, client.ObjectKey{Namespace: harness.FleetNamespace, Name: xdsreport.LeaseName("manager-2")}, &l); err != nil {
			return err
		}
		if v := l.Annotations["xds.fleetlb.io/"+v1.DefaultFleetName]; !strings.HasPrefix(v, "1 ") || strings.HasSuffix(v, " -") {
			return fmt.Errorf("report %q", v)
		}
		return nil
	})
	eventually(t, "Programmed by the leader", 60*time.Second, func() error {
		var lb v1.LoadBalancer
		if err := f.Mgmt.Client.Get(ctx, client.ObjectKey{Namespace: tenant.Namespace("a"), Name: service.LoadBalancerName("default", "web")}, &lb); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(lb.Status.Conditions, v1.ConditionProgrammed); c == nil || c.Status != "True" {
			return fmt.Errorf("Programmed %+v", c)
		}
		return nil
	})
}

func check2[A, B any](a A, b B, err error) func(t *testing.T) (A, B) {
	return func(t *testing.T) (A, B) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return a, b
	}
}
