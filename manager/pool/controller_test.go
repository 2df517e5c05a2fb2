package pool

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, testenv.Options{}, &env) }

var seq atomic.Int32

func uniq(prefix string) string { return fmt.Sprintf("%s-%d", prefix, seq.Add(1)) }

// calls counts what the controller does to the API, per pool.
type calls struct{ gets, patches atomic.Int64 }

// start runs the controller with a real client that counts pool reads and status writes.
func start(t *testing.T, watch string) *calls {
	t.Helper()
	mgr := env.NewManager(t)
	c := &calls{}
	counting := interceptor.NewClient(noWatch{mgr.GetClient()}, interceptor.Funcs{
		Get: func(ctx context.Context, c2 client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*v1.AddressPool); ok && key.Name == watch {
				c.gets.Add(1)
			}
			return c2.Get(ctx, key, obj, opts...)
		},
		SubResourcePatch: func(ctx context.Context, c2 client.Client, sub string, obj client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
			if obj.GetName() == watch {
				c.patches.Add(1)
			}
			return c2.SubResource(sub).Patch(ctx, obj, p, opts...)
		},
	})
	if err := (&Reconciler{Client: counting, Recorder: mgr.GetEventRecorder("pool")}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, mgr)
	return c
}

// noWatch lets the manager's (cached) client be intercepted; the controller never calls Watch.
type noWatch struct{ client.Client }

func (noWatch) Watch(context.Context, client.ObjectList, ...client.ListOption) (watch.Interface, error) {
	return nil, errors.New("not supported")
}

func minimalRouteSpec() v1.RouteSpec {
	return v1.RouteSpec{
		Source:    v1.RouteSource{Kind: v1.SourceIngress, Cluster: "c", Namespace: "default", Name: "r", UID: "u"},
		Hostnames: []v1.Hostname{"www.example.com"},
		Rules:     []v1.RouteRule{{Backends: []v1.RouteBackend{{NodePort: 30080}}}},
	}
}

func createPool(t *testing.T, name string, addrs ...v1.AddressRange) *v1.AddressPool {
	t.Helper()
	ap := &v1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.AddressPoolSpec{Addresses: addrs}}
	if err := env.Client.Create(context.Background(), ap); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), ap) })
	return ap
}

func namespace(t *testing.T) string {
	t.Helper()
	ns := uniq("tenant-pool")
	if err := env.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	return ns
}

// lbWith creates a LoadBalancer holding ip, as admission records an allocation.
func lbWith(t *testing.T, ns, name, ip string) *v1.LoadBalancer {
	t.Helper()
	ctx := context.Background()
	lb := &v1.LoadBalancer{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1.LoadBalancerSpec{
			Source: v1.ServiceSource{Cluster: "c", Namespace: "default", Name: name, UID: "u"},
			Ports:  []v1.LoadBalancerPort{{Port: 80, Protocol: v1.ProtocolTCP, NodePort: 30080}},
		},
	}
	if err := env.Client.Create(ctx, lb); err != nil {
		t.Fatal(err)
	}
	if ip != "" {
		lb.Status.Addresses = []v1.Address{{IP: v1.IPAddress(ip), IPMode: v1.IPModeProxy}}
		if err := env.Client.Status().Update(ctx, lb); err != nil {
			t.Fatal(err)
		}
	}
	return lb
}

// counts waits for the pool's status to show allocated/available and Ready=ready/reason.
func counts(t *testing.T, name string, allocated, available int64, ready metav1.ConditionStatus, reason string) *v1.AddressPool {
	t.Helper()
	var ap v1.AddressPool
	testenv.Eventually(t, fmt.Sprintf("pool %s %d/%d %s %s", name, allocated, available, ready, reason), func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKey{Name: name}, &ap); err != nil {
			return err
		}
		c := meta.FindStatusCondition(ap.Status.Conditions, v1.ConditionReady)
		if ap.Status.Allocated != allocated || ap.Status.Available != available || c == nil ||
			c.Status != ready || c.Reason != reason || ap.Status.ObservedGeneration != ap.Generation {
			return fmt.Errorf("status %+v", ap.Status)
		}
		return nil
	})
	return &ap
}

func TestPoolCountsFollowAllocations(t *testing.T) {
	ctx := context.Background()
	name := uniq("counts")
	start(t, name)
	// A /30 hands out two addresses: not its network and broadcast addresses.
	createPool(t, name, "127.0.40.0/30", "127.0.40.10")
	counts(t, name, 0, 3, metav1.ConditionTrue, v1.ReasonReady)

	ns := namespace(t)
	a := lbWith(t, ns, "a", "127.0.40.1")
	counts(t, name, 1, 2, metav1.ConditionTrue, v1.ReasonReady)
	lbWith(t, ns, "b", "127.0.40.10")
	lbWith(t, ns, "outside", "127.0.41.1")
	lbWith(t, ns, "pending", "")
	counts(t, name, 2, 1, metav1.ConditionTrue, v1.ReasonReady)

	// A fleet's shared VIP and the Routes served on it count once.
	fleet := &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: uniq("fleet")}}
	if err := env.Client.Create(ctx, fleet); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, fleet) })
	fleet.Status.Addresses = []v1.Address{{IP: "127.0.40.2"}}
	if err := env.Client.Status().Update(ctx, fleet); err != nil {
		t.Fatal(err)
	}
	counts(t, name, 3, 0, metav1.ConditionTrue, v1.ReasonReady)
	route := &v1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "r"}, Spec: minimalRouteSpec()}
	if err := env.Client.Create(ctx, route); err != nil {
		t.Fatal(err)
	}
	route.Status.Addresses = []v1.Address{{IP: "127.0.40.2"}}
	if err := env.Client.Status().Update(ctx, route); err != nil {
		t.Fatal(err)
	}
	// Releases: a LoadBalancer deleted, an address moved out of the pool.
	if err := env.Client.Delete(ctx, a); err != nil {
		t.Fatal(err)
	}
	counts(t, name, 2, 1, metav1.ConditionTrue, v1.ReasonReady)
	fleet.Status.Addresses = []v1.Address{{IP: "127.0.41.2"}}
	if err := env.Client.Status().Update(ctx, fleet); err != nil {
		t.Fatal(err)
	}
	counts(t, name, 2, 1, metav1.ConditionTrue, v1.ReasonReady) // the Route still holds .2
	route.Status.Addresses = nil
	if err := env.Client.Status().Update(ctx, route); err != nil {
		t.Fatal(err)
	}
	ap := counts(t, name, 1, 2, metav1.ConditionTrue, v1.ReasonReady)
	if c := meta.FindStatusCondition(ap.Status.Conditions, v1.ConditionReady); c.Message != "1 addresses allocated, 2 available" {
		t.Errorf("Ready message %q", c.Message)
	}
}

func TestPoolStatusNotRewrittenWithoutChange(t *testing.T) {
	ctx := context.Background()
	name := uniq("quiet")
	c := start(t, name)
	createPool(t, name, "127.0.42.0/29")
	ns := namespace(t)
	lbWith(t, ns, "a", "127.0.42.1")
	before := counts(t, name, 1, 5, metav1.ConditionTrue, v1.ReasonReady)
	gets, patches := c.gets.Load(), c.patches.Load()

	// Reconciles that change nothing: an address outside the pool, a new LoadBalancer without one.
	lbWith(t, ns, "outside", "127.0.43.1")
	lbWith(t, ns, "none", "")
	testenv.Eventually(t, "pool reconciled", func() error {
		if c.gets.Load() < gets+1 {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	var ap v1.AddressPool
	if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, &ap); err != nil {
		t.Fatal(err)
	}
	if ap.ResourceVersion != before.ResourceVersion {
		t.Errorf("pool rewritten without a change: resourceVersion %s → %s", before.ResourceVersion, ap.ResourceVersion)
	}
	// One real change is one write; the reconciles before it (same key, in order) wrote nothing.
	lbWith(t, ns, "b", "127.0.42.2")
	counts(t, name, 2, 4, metav1.ConditionTrue, v1.ReasonReady)
	if got := c.patches.Load() - patches; got != 1 {
		t.Errorf("%d status writes for one change", got)
	}
}

func TestPoolBadRangesAndOverlaps(t *testing.T) {
	ctx := context.Background()
	start(t, "")
	reversed := uniq("reversed")
	createPool(t, reversed, "127.0.50.9-127.0.50.1")
	self := uniq("self")
	createPool(t, self, "127.0.51.0/30", "127.0.51.2")
	// left is the older of two overlapping pools ("left" < "right" breaks a
	// tie of creation timestamps, which have second resolution).
	left, right, fine := uniq("left"), uniq("right"), uniq("fine")
	createPool(t, left, "127.0.52.0/29")
	createPool(t, right, "127.0.52.4-127.0.52.20")
	createPool(t, fine, "127.0.53.0/30")
	huge := uniq("huge")
	createPool(t, huge, "fd00:1::/64")

	counts(t, reversed, 0, 0, metav1.ConditionFalse, v1.ReasonInvalidSpec)
	counts(t, self, 0, 0, metav1.ConditionFalse, v1.ReasonInvalidSpec)
	// The younger pool is refused; the older one keeps working.
	counts(t, left, 0, 6, metav1.ConditionTrue, v1.ReasonReady)
	rt := counts(t, right, 0, 17, metav1.ConditionFalse, ReasonOverlap)
	counts(t, fine, 0, 2, metav1.ConditionTrue, v1.ReasonReady)
	counts(t, huge, 0, math.MaxInt64, metav1.ConditionTrue, v1.ReasonReady)
	if msg := meta.FindStatusCondition(rt.Status.Conditions, v1.ConditionReady).Message; msg !=
		"127.0.52.4-127.0.52.20 overlaps 127.0.52.0/29 of the older pool "+left+"; this pool hands out no new address until the overlap is removed" {
		t.Errorf("overlap message %q", msg)
	}
	testenv.Eventually(t, "warning events", func() error {
		var evs eventsv1.EventList
		if err := env.Client.List(ctx, &evs); err != nil {
			return err
		}
		seen := map[string]string{}
		for _, e := range evs.Items {
			if e.Regarding.Kind == "AddressPool" && e.Type == corev1.EventTypeWarning {
				seen[e.Regarding.Name] = e.Reason
			}
		}
		if seen[reversed] != v1.ReasonInvalidSpec || seen[self] != v1.ReasonInvalidSpec || seen[left] != "" || seen[right] != ReasonOverlap {
			return fmt.Errorf("events %v", seen)
		}
		return nil
	})

	// Fixing the younger pool makes it usable.
	var r v1.AddressPool
	if err := env.Client.Get(ctx, client.ObjectKey{Name: right}, &r); err != nil {
		t.Fatal(err)
	}
	r.Spec.Addresses = []v1.AddressRange{"127.0.52.8-127.0.52.20"}
	if err := env.Client.Update(ctx, &r); err != nil {
		t.Fatal(err)
	}
	counts(t, right, 0, 13, metav1.ConditionTrue, v1.ReasonReady)
	counts(t, left, 0, 6, metav1.ConditionTrue, v1.ReasonReady)

	// So does deleting the older one.
	older, younger := uniq("a-older"), uniq("b-younger")
	createPool(t, older, "127.0.54.0/29")
	createPool(t, younger, "127.0.54.4-127.0.54.5")
	counts(t, younger, 0, 2, metav1.ConditionFalse, ReasonOverlap)
	if err := env.Client.Delete(ctx, &v1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: older}}); err != nil {
		t.Fatal(err)
	}
	counts(t, younger, 0, 2, metav1.ConditionTrue, v1.ReasonReady)
}
