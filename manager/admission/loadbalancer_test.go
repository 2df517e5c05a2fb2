package admission

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
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

// startAdmission runs a fresh controller (a "manager process"); the returned
// func stops it.
func startAdmission(t *testing.T) func() {
	t.Helper()
	_, stop := startAdmissionWith(t, nil)
	return stop
}

// startAdmissionWith is startAdmission with the reconciler's options set by configure.
func startAdmissionWith(t *testing.T, configure func(*LoadBalancerReconciler)) (*LoadBalancerReconciler, func()) {
	t.Helper()
	mgr := env.NewManager(t)
	r := &LoadBalancerReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("admission")}
	if configure != nil {
		configure(r)
	}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	return r, testenv.Run(t, mgr)
}

var seq atomic.Int32

// setup creates a pool and a tenant using it, with its namespace; returns the namespace.
func setup(t *testing.T, addrs []v1.AddressRange, limits v1.TenantLimits) (string, string) {
	t.Helper()
	ctx := context.Background()
	n := seq.Add(1)
	poolName, name := fmt.Sprintf("pool-%d", n), fmt.Sprintf("adm-%d", n)
	createPool(t, poolName, addrs...)
	if err := env.Client.Create(ctx, &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.TenantSpec{AddressPool: poolName, Limits: limits}}); err != nil {
		t.Fatal(err)
	}
	ns := tenant.Namespace(name)
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	return ns, poolName
}

func createLB(t *testing.T, ns, name, requested string) {
	t.Helper()
	lb := &v1.LoadBalancer{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1.LoadBalancerSpec{
			Source:         v1.ServiceSource{Cluster: "c", Namespace: "default", Name: name, UID: "u-" + name},
			Ports:          []v1.LoadBalancerPort{{Port: 80, Protocol: v1.ProtocolTCP, NodePort: 30080}},
			LoadBalancerIP: v1.IPAddress(requested),
		},
	}
	if err := env.Client.Create(context.Background(), lb); err != nil {
		t.Fatal(err)
	}
}

// admitted waits until the LoadBalancer is Accepted with want (any address
// when want is "any"; or, when want starts with "reason:", refused with that
// reason) and returns its condition message.
func admitted(t *testing.T, ns, name, want string) string {
	t.Helper()
	var lb v1.LoadBalancer
	var got string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &lb); err != nil {
			got = err.Error()
			continue
		}
		c := meta.FindStatusCondition(lb.Status.Conditions, v1.ConditionAccepted)
		if c == nil || c.ObservedGeneration != lb.Generation {
			got = "no current Accepted condition"
			continue
		}
		if reason, ok := strings.CutPrefix(want, "reason:"); ok {
			if c.Status == metav1.ConditionFalse && c.Reason == reason {
				return c.Message
			}
		} else if c.Status == metav1.ConditionTrue && len(lb.Status.Addresses) == 1 && (want == "any" || string(lb.Status.Addresses[0].IP) == want) &&
			lb.Status.Addresses[0].IPMode == v1.IPModeProxy {
			return c.Message
		}
		got = fmt.Sprintf("%s %s %q addresses %v", c.Status, c.Reason, c.Message, lb.Status.Addresses)
	}
	t.Fatalf("%s/%s: want %s, have %s", ns, name, want, got)
	return ""
}

func TestAllocationRequestsAndRefusals(t *testing.T) {
	startAdmission(t)
	ns, _ := setup(t, []v1.AddressRange{"127.0.30.1-127.0.30.3"}, v1.TenantLimits{})
	createLB(t, ns, "a", "")
	admitted(t, ns, "a", "127.0.30.1")
	createLB(t, ns, "b", "127.0.30.3")
	admitted(t, ns, "b", "127.0.30.3")
	createLB(t, ns, "c", "127.0.30.3")
	if msg := admitted(t, ns, "c", "reason:"+v1.ReasonAddressInUse); !strings.Contains(msg, "LoadBalancer b") {
		t.Errorf("AddressInUse message does not name the tenant's own holder: %q", msg)
	}
	createLB(t, ns, "d", "127.0.99.1")
	admitted(t, ns, "d", "reason:"+v1.ReasonAddressNotAvailable)
	// The refusal of c did not cost a's and b's addresses, and it is an event.
	admitted(t, ns, "a", "127.0.30.1")
	defer func() {
		// When b lets its address go, c, which asked for it, gets it.
		if err := env.Client.Delete(context.Background(), &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "b"}}); err != nil {
			t.Fatal(err)
		}
		admitted(t, ns, "c", "127.0.30.3")
	}()
	var evs eventsv1.EventList
	if err := env.Client.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range evs.Items {
		found = found || e.Regarding.Name == "c" && e.Type == corev1.EventTypeWarning && e.Reason == v1.ReasonAddressInUse
	}
	if !found {
		t.Errorf("no AddressInUse warning event on c among %d events", len(evs.Items))
	}
}

func TestExhaustionReportedAndRecovered(t *testing.T) {
	startAdmission(t)
	ns, _ := setup(t, []v1.AddressRange{"127.0.31.1-127.0.31.2"}, v1.TenantLimits{})
	createLB(t, ns, "a", "")
	admitted(t, ns, "a", "127.0.31.1")
	createLB(t, ns, "b", "")
	admitted(t, ns, "b", "127.0.31.2")
	createLB(t, ns, "c", "")
	admitted(t, ns, "c", "reason:"+v1.ReasonPoolExhausted)
	if err := env.Client.Delete(context.Background(), &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "a"}}); err != nil {
		t.Fatal(err)
	}
	// The freed address goes to the waiting LoadBalancer without any change to it.
	admitted(t, ns, "c", "127.0.31.1")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "a"}, &v1.LoadBalancer{})
		if apierrors.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deleted LoadBalancer still held by its finalizer: %v", err)
		}
	}
}

func TestAddressesStableAcrossRestart(t *testing.T) {
	stop := startAdmission(t)
	ns, _ := setup(t, []v1.AddressRange{"127.0.32.0/29"}, v1.TenantLimits{})
	createLB(t, ns, "a", "")
	admitted(t, ns, "a", "127.0.32.1") // not .0, the /29's network address
	createLB(t, ns, "b", "127.0.32.5")
	admitted(t, ns, "b", "127.0.32.5")
	createLB(t, ns, "c", "")
	admitted(t, ns, "c", "127.0.32.2")
	stop()

	startAdmission(t) // a new process: its allocator is rebuilt from status
	createLB(t, ns, "d", "")
	admitted(t, ns, "d", "127.0.32.3")
	admitted(t, ns, "a", "127.0.32.1")
	admitted(t, ns, "b", "127.0.32.5")
	admitted(t, ns, "c", "127.0.32.2")
}

func TestTenantLimit(t *testing.T) {
	startAdmission(t)
	ns, _ := setup(t, []v1.AddressRange{"127.0.33.0/29"}, v1.TenantLimits{MaxLoadBalancers: ptr.To(int32(1))})
	createLB(t, ns, "first", "")
	// Creation timestamps have second resolution: keep "oldest first" well defined.
	time.Sleep(1100 * time.Millisecond)
	createLB(t, ns, "second", "")
	admitted(t, ns, "first", "127.0.33.1")
	if msg := admitted(t, ns, "second", "reason:"+v1.ReasonLimitExceeded); !strings.Contains(msg, "maxLoadBalancers=1") {
		t.Errorf("LimitExceeded message does not name the limit: %q", msg)
	}
	// The first one gone, the second is within the limit: admitted without any change to it.
	if err := env.Client.Delete(context.Background(), &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "first"}}); err != nil {
		t.Fatal(err)
	}
	admitted(t, ns, "second", "any")
}

// Limits are finite when the Tenant names none; LoadBalancers joined by a
// global name count as one address.
func TestDefaultLimitsAndSharedAddresses(t *testing.T) {
	startAdmission(t)
	ctx := context.Background()
	ns, _ := setup(t, []v1.AddressRange{"127.0.37.0/29"}, v1.TenantLimits{MaxAddresses: ptr.To(int32(1))})
	name, _ := tenant.Of(ns)
	var tn v1.Tenant
	if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, &tn); err != nil {
		t.Fatal(err)
	}
	if l := tn.Spec.Limits; ptr.Deref(l.MaxLoadBalancers, 0) != v1.DefaultMaxLoadBalancers || ptr.Deref(l.MaxRoutes, 0) != v1.DefaultMaxRoutes ||
		ptr.Deref(l.MaxAddresses, 0) != 1 || ptr.Deref(l.MaxRouteConfigBytes, 0) != v1.DefaultMaxRouteConfigBytes {
		t.Fatalf("limits not defaulted by the API: %+v", l)
	}
	global := func(name string) {
		lb := &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: v1.LoadBalancerSpec{
			Source: v1.ServiceSource{Cluster: "c", Namespace: "default", Name: name, UID: "u-" + name},
			Ports:  []v1.LoadBalancerPort{{Port: 80, Protocol: v1.ProtocolTCP, NodePort: 30080}},
			Global: &v1.GlobalOptions{Name: "web"},
		}}
		if err := env.Client.Create(ctx, lb); err != nil {
			t.Fatal(err)
		}
	}
	global("g1")
	admitted(t, ns, "g1", "127.0.37.1")
	time.Sleep(1100 * time.Millisecond) // creation timestamps have second resolution
	global("g2")
	admitted(t, ns, "g2", "127.0.37.1") // the same global name: the same address, within the limit
	time.Sleep(1100 * time.Millisecond)
	createLB(t, ns, "single", "")
	if msg := admitted(t, ns, "single", "reason:"+v1.ReasonLimitExceeded); !strings.Contains(msg, "maxAddresses=1") {
		t.Errorf("LimitExceeded message does not name the limit: %q", msg)
	}
}

func TestMissingPoolAndTenant(t *testing.T) {
	startAdmission(t)
	ctx := context.Background()
	ns := "tenant-nobody"
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	name := fmt.Sprintf("orphan-%d", seq.Add(1))
	createLB(t, ns, name, "")
	admitted(t, ns, name, "reason:"+v1.ReasonTenantNotFound)

	n := seq.Add(1)
	tn := fmt.Sprintf("nopool-%d", n)
	if err := env.Client.Create(ctx, &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: tn}, Spec: v1.TenantSpec{AddressPool: "does-not-exist"}}); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: tenant.Namespace(tn)}}); err != nil {
		t.Fatal(err)
	}
	createLB(t, tenant.Namespace(tn), "x", "")
	admitted(t, tenant.Namespace(tn), "x", "reason:"+v1.ReasonPoolNotFound)
}

// A global name of a tenant without a group never shares its address with a
// group named like that tenant (or its namespace).
func TestGlobalHolderDisjointFromGroups(t *testing.T) {
	lb := &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-b", Name: "web"}, Spec: v1.LoadBalancerSpec{Global: &v1.GlobalOptions{Name: "web"}}}
	alone := &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "b"}}
	for _, group := range []string{"b", "tenant-b"} {
		other := &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "c"}, Spec: v1.TenantSpec{Group: group}}
		if holder(other, lb) == holder(alone, lb) {
			t.Errorf("group %q holds the global address of tenant b: %q", group, holder(alone, lb))
		}
	}
}

// A LoadBalancer created with the finalizer (as the ccm creates it) is
// admitted with a status write alone; one created without it (an older ccm)
// gets it from admission.
func TestFinalizerSetAtCreateIsNotWrittenAgain(t *testing.T) {
	startAdmission(t)
	ctx := context.Background()
	ns, _ := setup(t, []v1.AddressRange{"127.0.38.1-127.0.38.2"}, v1.TenantLimits{})
	for _, withFinalizer := range []bool{true, false} {
		name := fmt.Sprintf("held-%t", withFinalizer)
		lb := &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: v1.LoadBalancerSpec{
			Source: v1.ServiceSource{Cluster: "c", Namespace: "default", Name: name, UID: "u-" + name},
			Ports:  []v1.LoadBalancerPort{{Port: 80, Protocol: v1.ProtocolTCP, NodePort: 30080}},
		}}
		if withFinalizer {
			lb.Finalizers = []string{v1.FinalizerAddressRelease}
		}
		if err := env.Client.Create(ctx, lb, client.FieldOwner("test-ccm")); err != nil {
			t.Fatal(err)
		}
		admitted(t, ns, name, "any")
		testenv.Eventually(t, name+": finalizer", func() error {
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(lb), lb); err != nil {
				return err
			}
			if len(lb.Finalizers) != 1 || lb.Finalizers[0] != Finalizer {
				return fmt.Errorf("finalizers %v", lb.Finalizers)
			}
			return nil
		})
		if !withFinalizer {
			continue
		}
		for _, mf := range lb.ManagedFields {
			if mf.Subresource == "" && mf.Manager != "test-ccm" {
				t.Errorf("%s: admission wrote the object itself (%s %s), not only its status", name, mf.Manager, mf.Operation)
			}
		}
	}
}
