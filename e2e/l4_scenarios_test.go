package e2e

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/ccm/nodes"
	"github.com/fleetlb/fleetlb/ccm/service"
	"github.com/fleetlb/fleetlb/e2e/harness"
	"github.com/fleetlb/fleetlb/internal/scheme"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// answeringNodes dials addr n times and returns which nodes answered; a failed
// dial is an error, so a node that is still configured but dead shows up.
func answeringNodes(addr string, n int) (map[string]bool, error) {
	seen := map[string]bool{}
	for range n {
		id, err := dialIdentity(addr)
		if err != nil {
			return seen, err
		}
		seen[id.Node] = true
	}
	return seen, nil
}

// servedExactlyBy waits until addr is answered by exactly the given nodes.
func servedExactlyBy(t *testing.T, what, addr string, timeout time.Duration, want ...string) {
	t.Helper()
	eventually(t, what, timeout, func() error {
		seen, err := answeringNodes(addr, 4*len(want)+4)
		if err != nil {
			return err
		}
		if got := slices.Sorted(maps.Keys(seen)); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
			return fmt.Errorf("answered by %v, want %v", got, want)
		}
		return nil
	})
}

func waitEvent(t *testing.T, tc *harness.Tenant, name, reason string) {
	t.Helper()
	eventually(t, reason+" event on "+name, 60*time.Second, func() error {
		var evs corev1.EventList
		if err := tc.Env.Client.List(context.Background(), &evs, client.InNamespace("default")); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == name && e.Reason == reason {
				return nil
			}
		}
		return fmt.Errorf("no %s event for %s among %d events", reason, name, len(evs.Items))
	})
}

// allocated lists every address held in the management cluster (LoadBalancers and fleets).
func allocated(t *testing.T, f *harness.Fleet) []string {
	t.Helper()
	var out []string
	var lbs v1.LoadBalancerList
	if err := f.Mgmt.Client.List(context.Background(), &lbs); err != nil {
		t.Fatal(err)
	}
	for _, lb := range lbs.Items {
		for _, a := range lb.Status.Addresses {
			out = append(out, string(a.IP))
		}
	}
	var fleets v1.ProxyFleetList
	if err := f.Mgmt.Client.List(context.Background(), &fleets); err != nil {
		t.Fatal(err)
	}
	for _, fl := range fleets.Items {
		for _, a := range fl.Status.Addresses {
			out = append(out, string(a.IP))
		}
	}
	return out
}

// addresses maps every Service of the tenants that has an address to it.
func addresses(t *testing.T, tcs ...*harness.Tenant) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, tc := range tcs {
		var svcs corev1.ServiceList
		if err := tc.Env.Client.List(context.Background(), &svcs); err != nil {
			t.Fatal(err)
		}
		for _, s := range svcs.Items {
			if ing := s.Status.LoadBalancer.Ingress; len(ing) > 0 {
				out[tc.Name+"/"+s.Namespace+"/"+s.Name] = ing[0].IP
			}
		}
	}
	return out
}

// TestL4Scenarios runs the L4 life cycle on one installation, in order: nodes
// coming and going, health checks, source ranges, address refusal and pool
// exhaustion, deletion, tenant isolation, and the manager, a ccm and the whole
// management cluster going away and coming back.
func TestL4Scenarios(t *testing.T) {
	h := newHarness(t)
	f := check(h.StartFleet("127.0.70.1-127.0.70.8"))(t)
	check(f.StartProxy(true))(t)
	a := check(f.AddTenant("a"))(t)
	b := check(f.AddTenant("b"))(t)
	ctx := context.Background()
	aNodes := map[string]string{"a-1": "127.0.5.1", "a-2": "127.0.5.2"}
	for n, ip := range aNodes {
		if err := a.AddNode(n, ip, "z1"); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.AddNode("b-1", "127.0.6.1", "z1"); err != nil {
		t.Fatal(err)
	}
	if err := a.Env.Client.Create(ctx, loadBalancerService("web", corev1.ServicePort{Port: 8080, Protocol: corev1.ProtocolTCP})); err != nil {
		t.Fatal(err)
	}
	if err := b.Env.Client.Create(ctx, loadBalancerService("web", corev1.ServicePort{Port: 8080, Protocol: corev1.ProtocolTCP})); err != nil {
		t.Fatal(err)
	}
	va, vb := waitAddress(t, a, "web"), waitAddress(t, b, "web")
	if err := a.ServeNodePorts("default", "web", aNodes); err != nil {
		t.Fatal(err)
	}
	if err := b.ServeNodePorts("default", "web", map[string]string{"b-1": "127.0.6.1"}); err != nil {
		t.Fatal(err)
	}
	webA, webB := netip.AddrPortFrom(va, 8080).String(), netip.AddrPortFrom(vb, 8080).String()
	servedExactlyBy(t, "a's web by both of a's nodes", webA, 60*time.Second, "a-1", "a-2")
	servedExactlyBy(t, "b's web by b's node", webB, 30*time.Second, "b-1")

	setNodeLabel := func(name string, exclude bool) {
		t.Helper()
		var n corev1.Node
		if err := a.Env.Client.Get(ctx, client.ObjectKey{Name: name}, &n); err != nil {
			t.Fatal(err)
		}
		if exclude {
			n.Labels[nodes.LabelExclude] = ""
		} else {
			delete(n.Labels, nodes.LabelExclude)
		}
		if err := a.Env.Client.Update(ctx, &n); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("endpoints follow nodes added, excluded and removed", func(t *testing.T) {
		if err := a.AddNode("a-3", "127.0.5.3", "z2"); err != nil {
			t.Fatal(err)
		}
		if err := a.ServeNodePorts("default", "web", map[string]string{"a-3": "127.0.5.3"}); err != nil {
			t.Fatal(err)
		}
		servedExactlyBy(t, "a new node serves", webA, 60*time.Second, "a-1", "a-2", "a-3")
		setNodeLabel("a-2", true)
		servedExactlyBy(t, "an excluded node stops serving", webA, 60*time.Second, "a-1", "a-3")
		if err := a.Env.Client.Delete(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "a-3"}}); err != nil {
			t.Fatal(err)
		}
		servedExactlyBy(t, "a deleted node stops serving", webA, 60*time.Second, "a-1")
		setNodeLabel("a-2", false)
		servedExactlyBy(t, "an included node serves again", webA, 60*time.Second, "a-1", "a-2")
	})

	t.Run("a node that stops answering is taken out by health checks", func(t *testing.T) {
		if err := a.StopNodePorts("a-2"); err != nil {
			t.Fatal(err)
		}
		// TCP checks every 5s, 3 failures: out within ~15s plus jitter.
		servedExactlyBy(t, "only the healthy node serves", webA, 90*time.Second, "a-1")
		if err := a.ServeNodePorts("default", "web", map[string]string{"a-2": "127.0.5.2"}); err != nil {
			t.Fatal(err)
		}
		servedExactlyBy(t, "the node serves again once healthy", webA, 90*time.Second, "a-1", "a-2")
	})

	t.Run("loadBalancerSourceRanges are enforced", func(t *testing.T) {
		svc := loadBalancerService("restricted", corev1.ServicePort{Port: 9000, Protocol: corev1.ProtocolTCP})
		svc.Spec.LoadBalancerSourceRanges = []string{"127.0.0.99/32"}
		if err := a.Env.Client.Create(ctx, svc); err != nil {
			t.Fatal(err)
		}
		vip := waitAddress(t, a, "restricted")
		if err := a.ServeNodePorts("default", "restricted", aNodes); err != nil {
			t.Fatal(err)
		}
		addr := netip.AddrPortFrom(vip, 9000).String()
		from := func(src string) error {
			d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
			c, err := d.Dial("tcp", addr)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			_, err = bufio.NewReader(c).ReadString('\n')
			return err
		}
		eventually(t, "an allowed source connects", 60*time.Second, func() error { return from("127.0.0.99") })
		for range 5 {
			if err := from("127.0.0.1"); err == nil {
				t.Fatal("a source outside loadBalancerSourceRanges got through")
			}
		}
	})

	t.Run("refused addresses and pool exhaustion are reported on the tenant Service", func(t *testing.T) {
		outside := loadBalancerService("outside", corev1.ServicePort{Port: 81, Protocol: corev1.ProtocolTCP})
		outside.Annotations = map[string]string{v1.AnnotationLoadBalancerIP: "127.0.99.1"}
		if err := a.Env.Client.Create(ctx, outside); err != nil {
			t.Fatal(err)
		}
		waitEvent(t, a, "outside", v1.ReasonAddressNotAvailable)
		if err := a.Env.Client.Delete(ctx, outside); err != nil {
			t.Fatal(err)
		}
		// Fill what is left of the 8 addresses (the fleet's shared VIP holds one too).
		free := 8 - len(allocated(t, f))
		for i := range free {
			if err := b.Env.Client.Create(ctx, loadBalancerService(fmt.Sprintf("fill-%d", i), corev1.ServicePort{Port: 81, Protocol: corev1.ProtocolTCP})); err != nil {
				t.Fatal(err)
			}
			waitAddress(t, b, fmt.Sprintf("fill-%d", i))
		}
		if err := a.Env.Client.Create(ctx, loadBalancerService("over", corev1.ServicePort{Port: 81, Protocol: corev1.ProtocolTCP})); err != nil {
			t.Fatal(err)
		}
		waitEvent(t, a, "over", v1.ReasonPoolExhausted)
		if err := b.Env.Client.Delete(ctx, loadBalancerService("fill-0")); err != nil {
			t.Fatal(err)
		}
		waitAddress(t, a, "over")
		for i := 1; i < free; i++ {
			if err := b.Env.Client.Delete(ctx, loadBalancerService(fmt.Sprintf("fill-%d", i))); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("a deleted Service loses its LoadBalancer, address, listener and finalizer", func(t *testing.T) {
		vip := waitAddress(t, a, "restricted")
		if err := a.Env.Client.Delete(ctx, loadBalancerService("restricted")); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the Service is gone (finalizer removed)", 60*time.Second, func() error {
			err := a.Env.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: "restricted"}, &corev1.Service{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("still there: %v", err)
		})
		eventually(t, "the LoadBalancer is gone", 30*time.Second, func() error {
			err := f.Mgmt.Client.Get(ctx, client.ObjectKey{Namespace: tenant.Namespace("a"), Name: service.LoadBalancerName("default", "restricted")}, &v1.LoadBalancer{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("still there: %v", err)
		})
		eventually(t, "the listener is gone", 30*time.Second, func() error {
			d := net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.99")}}
			c, err := d.Dial("tcp", netip.AddrPortFrom(vip, 9000).String())
			if err != nil {
				return nil // refused: nothing listens there any more
			}
			c.Close()
			return fmt.Errorf("%s:9000 still accepts", vip)
		})
		// The address is free again: a Service asking for it gets it.
		again := loadBalancerService("again", corev1.ServicePort{Port: 81, Protocol: corev1.ProtocolTCP})
		again.Annotations = map[string]string{v1.AnnotationLoadBalancerIP: vip.String()}
		if err := b.Env.Client.Create(ctx, again); err != nil {
			t.Fatal(err)
		}
		if got := waitAddress(t, b, "again"); got != vip {
			t.Fatalf("the released %s was not handed out again (got %s)", vip, got)
		}
	})

	t.Run("a tenant's kubeconfig reaches nothing of another tenant's or the cluster's", func(t *testing.T) {
		cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(h.Dir, "a-to-management.kubeconfig"))
		if err != nil {
			t.Fatal(err)
		}
		c, err := client.New(cfg, client.Options{Scheme: scheme.New()})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.List(ctx, &v1.LoadBalancerList{}, client.InNamespace(tenant.Namespace("a"))); err != nil {
			t.Fatalf("a must list its own LoadBalancers: %v", err)
		}
		forbidden := map[string]error{
			"list b's LoadBalancers": c.List(ctx, &v1.LoadBalancerList{}, client.InNamespace(tenant.Namespace("b"))),
			"read b's TenantNodes":   c.Get(ctx, client.ObjectKey{Namespace: tenant.Namespace("b"), Name: "default"}, &v1.TenantNodes{}),
			"list b's Secrets":       c.List(ctx, &corev1.SecretList{}, client.InNamespace(tenant.Namespace("b"))),
			"list Tenants":           c.List(ctx, &v1.TenantList{}),
			"list AddressPools":      c.List(ctx, &v1.AddressPoolList{}),
			"list Namespaces":        c.List(ctx, &corev1.NamespaceList{}),
			"create in b's namespace": c.Create(ctx, &v1.TenantNodes{ObjectMeta: metav1.ObjectMeta{Namespace: tenant.Namespace("b"), Name: "x"},
				Spec: v1.TenantNodesSpec{}}),
		}
		for what, err := range forbidden {
			if !apierrors.IsForbidden(err) {
				t.Errorf("%s: %v, want Forbidden", what, err)
			}
		}
	})

	// keepsServing dials webA and webB for d, every 250ms, and fails on any error.
	keepsServing := func(t *testing.T, d time.Duration) {
		t.Helper()
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
			for _, addr := range []string{webA, webB} {
				if _, err := dialIdentity(addr); err != nil {
					t.Fatalf("traffic to %s broke: %v", addr, err)
				}
			}
		}
	}

	t.Run("manager killed and restarted: VIPs unchanged, traffic kept, changes converge", func(t *testing.T) {
		before := addresses(t, a, b)
		f.Manager.Kill()
		if err := a.Env.Client.Create(ctx, loadBalancerService("during", corev1.ServicePort{Port: 82, Protocol: corev1.ProtocolTCP})); err != nil {
			t.Fatal(err)
		}
		keepsServing(t, 3*time.Second)
		var err error
		if f.Manager, err = f.Manager.Restart(); err != nil {
			t.Fatal(err)
		}
		waitAddress(t, a, "during")
		keepsServing(t, time.Second)
		after := addresses(t, a, b)
		for k, ip := range before {
			if after[k] != ip {
				t.Errorf("%s: address %s changed to %s across the restart", k, ip, after[k])
			}
		}
	})

	t.Run("ccm restarted: changes made meanwhile converge", func(t *testing.T) {
		a.CCM.Stop()
		if err := a.Env.Client.Create(ctx, loadBalancerService("while-ccm-down", corev1.ServicePort{Port: 83, Protocol: corev1.ProtocolTCP})); err != nil {
			t.Fatal(err)
		}
		keepsServing(t, time.Second)
		var err error
		if a.CCM, err = a.CCM.Restart(); err != nil {
			t.Fatal(err)
		}
		waitAddress(t, a, "while-ccm-down")
	})

	t.Run("management cluster unreachable for 20s: traffic unaffected, changes converge after", func(t *testing.T) {
		before := addresses(t, a, b)
		f.Gate.Block()
		if err := b.Env.Client.Create(ctx, loadBalancerService("while-unreachable", corev1.ServicePort{Port: 84, Protocol: corev1.ProtocolTCP})); err != nil {
			t.Fatal(err)
		}
		keepsServing(t, 20*time.Second)
		if err := f.Gate.Unblock(); err != nil {
			t.Fatal(err)
		}
		waitAddress(t, b, "while-unreachable")
		keepsServing(t, time.Second)
		after := addresses(t, a, b)
		for k, ip := range before {
			if after[k] != ip {
				t.Errorf("%s: address %s changed to %s", k, ip, after[k])
			}
		}
		if !strings.HasPrefix(after["b/default/while-unreachable"], "127.0.70.") {
			t.Errorf("the Service created while unreachable got %q", after["b/default/while-unreachable"])
		}
	})
}
