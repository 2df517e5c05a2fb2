package fleet

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/proxy/xdsclient"
)

// TestFleetStatusFromTheRealXDSServer connects a real ADS client, over mTLS
// with the client certificate the controller wrote into the fleet's Secret,
// to the real xDS server and reads connectedProxies, configVersion and
// Programmed back from the fleet's status.
func TestFleetStatusFromTheRealXDSServer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	x := startRealXDS(t, ctx, 200*time.Millisecond)
	f := createFleet(t, &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: uniq("real")}, Spec: v1.ProxyFleetSpec{Exposure: v1.ExposureNone}})
	condition(t, f.Name, v1.ConditionProgrammed, metav1.ConditionFalse, v1.ReasonNoProxies)

	gen := x.srv.Set(f.Name, clusters("c"))
	accept := xdsclient.HandlerFunc(func(string, map[string]proto.Message) error { return nil })
	stopProxy := x.connectProxy(t, ctx, f.Name, accept)

	got := condition(t, f.Name, v1.ConditionProgrammed, metav1.ConditionTrue, v1.ReasonProgrammed)
	version, served := x.srv.Version(f.Name)
	if served < gen || got.Status.ConfigVersion != version || got.Status.ConnectedProxies != 1 {
		t.Errorf("status connected=%d version=%q, want 1 and %q (generation %d)", got.Status.ConnectedProxies, got.Status.ConfigVersion, version, served)
	}

	stopProxy()
	got = condition(t, f.Name, v1.ConditionProgrammed, metav1.ConditionFalse, v1.ReasonNoProxies)
	if got.Status.ConnectedProxies != 0 || got.Status.ConfigVersion != version {
		t.Errorf("after the proxy left: connected=%d version=%q, want 0 and the last acknowledged %q", got.Status.ConnectedProxies, got.Status.ConfigVersion, version)
	}
	c := meta.FindStatusCondition(got.Status.Conditions, v1.ConditionReady)
	if c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("Ready %+v for an exposure None fleet", c)
	}
	var cm corev1.ConfigMap
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: x.ns, Name: ObjectName(f.Name)}, &cm); err != nil {
		t.Errorf("bootstrap ConfigMap of an exposure None fleet: %v", err)
	}
}
