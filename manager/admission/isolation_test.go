package admission

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/testenv"
	"github.com/fleetlb/fleetlb/manager/ipam"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// addTenant creates a Tenant of group (may be "") on an existing pool, with its namespace.
func addTenant(t *testing.T, poolName, group string) (string, string) {
	t.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("iso-%d", seq.Add(1))
	if err := env.Client.Create(ctx, &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.TenantSpec{AddressPool: poolName, Group: group}}); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: tenant.Namespace(name)}}); err != nil {
		t.Fatal(err)
	}
	return name, tenant.Namespace(name)
}

// createPool creates an AddressPool for the test; it goes when the test ends,
// so that a repeated run (-count) does not overlap it.
func createPool(t *testing.T, name string, addrs ...v1.AddressRange) {
	t.Helper()
	ap := &v1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.AddressPoolSpec{Addresses: addrs}}
	if err := env.Client.Create(context.Background(), ap); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), ap) })
}

// deleteLB deletes a LoadBalancer and waits until it is gone.
func deleteLB(t *testing.T, ns, name string) {
	t.Helper()
	ctx := context.Background()
	if err := env.Client.Delete(ctx, &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "LoadBalancer "+name+" gone", func() error {
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &v1.LoadBalancer{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there: %v", err)
		}
		return nil
	})
}

// The finding: an AddressPool overlapping a live one was marked
// OverlappingPools yet still allocated, so a tenant on it was given
// 127.0.100.5 while another tenant held it, and the pool's network address .0.
func TestOverlappingPoolNeverHandsOutAHeldOrNetworkAddress(t *testing.T) {
	startAdmission(t)
	older, younger := fmt.Sprintf("a-older-%d", seq.Add(1)), fmt.Sprintf("b-younger-%d", seq.Add(1))
	createPool(t, older, "127.0.100.0/24")
	_, victim := addTenant(t, older, "")
	createLB(t, victim, "web", "127.0.100.5")
	admitted(t, victim, "web", "127.0.100.5")
	createLB(t, victim, "first", "")
	admitted(t, victim, "first", "127.0.100.1") // never .0

	// Creation timestamps have second resolution: make "younger" younger.
	time.Sleep(1100 * time.Millisecond)
	createPool(t, younger, "127.0.100.0/28")
	_, squatter := addTenant(t, younger, "")
	createLB(t, squatter, "auto", "")
	createLB(t, squatter, "held", "127.0.100.5")
	createLB(t, squatter, "network", "127.0.100.0")
	for _, name := range []string{"auto", "held", "network"} {
		msg := admitted(t, squatter, name, "reason:"+v1.ReasonAddressNotAvailable)
		if !strings.Contains(msg, "overlaps an older address pool") || strings.Contains(msg, victim) {
			t.Errorf("%s: message %q", name, msg)
		}
	}
	// The older pool keeps working.
	createLB(t, victim, "second", "")
	admitted(t, victim, "second", "127.0.100.2")

	// Once the older pool is gone the younger one allocates, and still never
	// what the victim holds nor the network address.
	if err := env.Client.Delete(context.Background(), &v1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: older}}); err != nil {
		t.Fatal(err)
	}
	admitted(t, squatter, "auto", "127.0.100.3")
	msg := admitted(t, squatter, "held", "reason:"+v1.ReasonAddressInUse)
	if !strings.Contains(msg, "in use by another tenant") || strings.Contains(msg, victim) || strings.Contains(msg, "web") {
		t.Errorf("AddressInUse message names the holder: %q", msg)
	}
	msg = admitted(t, squatter, "network", "reason:"+v1.ReasonAddressNotAvailable)
	if !strings.Contains(msg, "network address of 127.0.100.0/28") {
		t.Errorf("network address message %q", msg)
	}
	// The victim's address never moved (its pool is gone, so it is not Accepted).
	admitted(t, victim, "web", "reason:"+v1.ReasonPoolNotFound)
	var lb v1.LoadBalancer
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: victim, Name: "web"}, &lb); err != nil {
		t.Fatal(err)
	}
	if len(lb.Status.Addresses) != 1 || lb.Status.Addresses[0].IP != "127.0.100.5" {
		t.Errorf("victim's addresses %v", lb.Status.Addresses)
	}
}

// A tenant that strips the finalizer before deleting does not leak the
// address: the allocator releases it from its own record.
func TestFinalizerStrippedAddressStillReleased(t *testing.T) {
	startAdmission(t)
	ctx := context.Background()
	ns, _ := setup(t, []v1.AddressRange{"127.0.34.1"}, v1.TenantLimits{})
	createLB(t, ns, "a", "")
	admitted(t, ns, "a", "127.0.34.1")
	var lb v1.LoadBalancer
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "a"}, &lb); err != nil {
		t.Fatal(err)
	}
	lb.Finalizers = nil
	if err := env.Client.Update(ctx, &lb); err != nil {
		t.Fatal(err)
	}
	deleteLB(t, ns, "a")
	createLB(t, ns, "b", "")
	admitted(t, ns, "b", "127.0.34.1")
}

// offsetClock is the real clock moved forward by a settable offset.
type offsetClock struct{ offset atomic.Int64 }

func (c *offsetClock) now() time.Time      { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *offsetClock) set(d time.Duration) { c.offset.Store(int64(d)) }
func withClock(c *offsetClock, q time.Duration) func(*LoadBalancerReconciler) {
	return func(r *LoadBalancerReconciler) { r.Quarantine, r.Now = q, c.now }
}

// A released address waits the quarantine before another tenant group can
// have it; the same group takes it back at once; the quarantine survives a
// restart, and a LoadBalancer waiting for it gets it when it ends, by itself.
func TestQuarantine(t *testing.T) {
	ctx := context.Background()
	const q = 10 * time.Minute
	clock := &offsetClock{}
	r, stop := startAdmissionWith(t, withClock(clock, q))
	poolName := fmt.Sprintf("quarantine-%d", seq.Add(1))
	createPool(t, poolName, "127.0.35.1-127.0.35.3")
	group := fmt.Sprintf("g%d", seq.Add(1))
	victimName, victim := addTenant(t, poolName, group)
	_, sibling := addTenant(t, poolName, group)
	_, other := addTenant(t, poolName, "")

	createLB(t, victim, "web", "")
	admitted(t, victim, "web", "127.0.35.1")
	createLB(t, victim, "api", "")
	admitted(t, victim, "api", "127.0.35.2")
	createLB(t, other, "mine", "")
	admitted(t, other, "mine", "127.0.35.3")
	deleteLB(t, victim, "web")
	deleteLB(t, victim, "api")

	// Another group may not take them...
	createLB(t, other, "squat", "127.0.35.1")
	msg := admitted(t, other, "squat", "reason:"+ReasonAddressQuarantined)
	if strings.Contains(msg, victimName) || strings.Contains(msg, "web") {
		t.Errorf("quarantine message names the previous holder: %q", msg)
	}
	// ...and is retried when the quarantine ends: Reconcile asks for it, nothing polls.
	// (Called here beside the running controller: once its cache has the
	// finalizer the controller wrote, so the two do not race to write it.)
	testenv.Eventually(t, "finalizer in the controller's cache", func() error {
		var lb v1.LoadBalancer
		if err := r.Client.Get(ctx, client.ObjectKey{Namespace: other, Name: "squat"}, &lb); err != nil {
			return err
		}
		if !controllerutil.ContainsFinalizer(&lb, Finalizer) {
			return fmt.Errorf("no finalizer yet")
		}
		return nil
	})
	res, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKey{Namespace: other, Name: "squat"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.RequeueAfter < q-time.Minute || res.RequeueAfter > q {
		t.Errorf("RequeueAfter %s, want just under %s", res.RequeueAfter, q)
	}
	createLB(t, other, "wait", "")
	if msg := admitted(t, other, "wait", "reason:"+v1.ReasonPoolExhausted); !strings.Contains(msg, "leaves its quarantine at") {
		t.Errorf("exhausted message %q", msg)
	}
	deleteLB(t, other, "wait")

	// The same group (another tenant of it) takes one back at once.
	createLB(t, sibling, "web", "127.0.35.2")
	admitted(t, sibling, "web", "127.0.35.2")

	// The quarantine is persisted on the pool and survives a restart.
	var ap v1.AddressPool
	if err := env.Client.Get(ctx, client.ObjectKey{Name: poolName}, &ap); err != nil {
		t.Fatal(err)
	}
	var saved []quarantined
	if err := json.Unmarshal([]byte(ap.Annotations[AnnotationQuarantine]), &saved); err != nil || len(saved) == 0 {
		t.Fatalf("quarantine annotation %q: %v", ap.Annotations[AnnotationQuarantine], err)
	}
	stop()
	startAdmissionWith(t, withClock(clock, q))
	deleteLB(t, other, "squat")
	createLB(t, other, "squat2", "127.0.35.1")
	admitted(t, other, "squat2", "reason:"+ReasonAddressQuarantined)

	// Two seconds before the end of the quarantine, a change to the waiting
	// object is retried when the quarantine ends, with no further change.
	var until time.Time
	for _, e := range saved {
		if e.Address == "127.0.35.1" {
			until = e.Until
		}
	}
	clock.set(time.Until(until) - 2*time.Second)
	var lb v1.LoadBalancer
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: other, Name: "squat2"}, &lb); err != nil {
		t.Fatal(err)
	}
	lb.Spec.Ports[0].NodePort = 30081
	if err := env.Client.Update(ctx, &lb); err != nil {
		t.Fatal(err)
	}
	admitted(t, other, "squat2", "127.0.35.1")
}

// What a tenant is told about the holder of an address it asked for.
func TestHeldByNeverNamesAnotherTenant(t *testing.T) {
	lb := &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: "web"}}
	for _, c := range []struct{ owner, group, want string }{
		{"tenant-a/api", "tenant:a", "already allocated to LoadBalancer api"},
		{"global:group:shop/www", "group:shop", "already allocated to the global load balancer www of this tenant's group"},
		{"tenant-b/api", "tenant:b", "in use by another tenant"},
		{"global:group:other/www", "group:other", "in use by another tenant"},
		{"global:tenant:b/www", "tenant:b", "in use by another tenant"},
		{"proxyfleet:default", "proxyfleet:default", "the shared VIP of proxy fleet default"},
	} {
		e := &ipam.InUseError{Owner: c.owner, Group: c.group}
		if got := heldBy(lb, "group:shop", e); got != c.want {
			t.Errorf("held by %s: %q, want %q", c.owner, got, c.want)
		}
	}
}
