package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/e2e/harness"
	"github.com/fleetlb/fleetlb/internal/blackhole"
	"github.com/fleetlb/fleetlb/internal/echo"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// Kill modes of a tenant cluster's backend (issue 14).
const (
	killRefuse    = "refuse"    // the node port is closed: connects are refused
	killBlackhole = "blackhole" // the node port neither accepts nor refuses: SYNs are dropped
	kill503       = "503"       // the backend answers every request, health checks included, with 503
)

// killableBackend is one node port of a tenant cluster, played by the test
// (instead of harness.Tenant.ServeNodePorts) so it can fail in every mode.
type killableBackend struct {
	id       echo.Identity
	protocol string // "tcp" or "http"
	addr     string
	srv      *echo.Server
	hole     *blackhole.Hole
}

func startKillable(t *testing.T, id echo.Identity, protocol, addr string) *killableBackend {
	t.Helper()
	b := &killableBackend{id: id, protocol: protocol, addr: addr}
	if err := b.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.close)
	return b
}

func (b *killableBackend) start() error {
	s := echo.New(b.id)
	var err error
	// A port just closed may be busy a moment (bounded).
	for range 50 {
		if b.protocol == "http" {
			_, err = s.ServeHTTP(b.addr, false)
		} else {
			_, err = s.ServeTCP(b.addr)
		}
		if err == nil {
			b.srv = s
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = s.Close()
	return err
}

func (b *killableBackend) kill(t *testing.T, mode string) {
	t.Helper()
	switch mode {
	case kill503:
		b.srv.SetHTTPStatus(http.StatusServiceUnavailable)
		return
	case killRefuse, killBlackhole:
		if err := b.srv.Close(); err != nil {
			t.Fatal(err)
		}
		b.srv = nil
	}
	if mode == killBlackhole {
		h, err := blackhole.Listen(b.addr)
		if err != nil {
			t.Fatal(err)
		}
		b.hole = h
		if !h.Holds() {
			t.Skip("this kernel accepts connects beyond a full backlog-0 queue; no black hole on loopback")
		}
	}
}

func (b *killableBackend) restore(t *testing.T, mode string) {
	t.Helper()
	if mode == kill503 {
		b.srv.SetHTTPStatus(0)
		return
	}
	if b.hole != nil {
		b.hole.Close()
		b.hole = nil
	}
	if err := b.start(); err != nil {
		t.Fatal(err)
	}
}

func (b *killableBackend) close() {
	if b.hole != nil {
		b.hole.Close()
	}
	if b.srv != nil {
		_ = b.srv.Close()
	}
}

// globalPair is the two clusters of group shop serving one global name with
// strategy failover: east priority 0, west priority 1.
type globalPair struct {
	f       *harness.Fleet
	tenants map[string]*harness.Tenant
	nodes   map[string]string // cluster → node IP
}

func startGlobalPair(t *testing.T, pool v1.AddressRange, eastIP, westIP string) *globalPair {
	t.Helper()
	h := newHarness(t)
	f := check(h.StartFleet(pool))(t)
	check(f.StartProxy(true))(t)
	p := &globalPair{f: f, tenants: map[string]*harness.Tenant{}, nodes: map[string]string{"east": eastIP, "west": westIP}}
	for _, name := range []string{"east", "west"} {
		tc := check(f.AddTenantWith(name, v1.TenantSpec{Group: "shop", AddressPool: "vips", Hostnames: []v1.Hostname{"*.shop.example.com"}}))(t)
		if err := tc.AddNode(name+"-1", p.nodes[name], "z1"); err != nil {
			t.Fatal(err)
		}
		p.tenants[name] = tc
	}
	return p
}

// servingCondition waits until the management object made from the tenant's
// source object (a LoadBalancer or Route) carries Serving with status and reason.
// Each try sends a request first: the proxies report where traffic went.
func (p *globalPair) servingCondition(t *testing.T, cluster string, list client.ObjectList, source string, status metav1.ConditionStatus, reason string, send func() (string, error)) {
	t.Helper()
	ns := tenant.Namespace(cluster)
	eventually(t, fmt.Sprintf("%s's %s: Serving=%s %s", cluster, source, status, reason), 60*time.Second, func() error {
		_, _ = send()
		if err := p.f.Mgmt.Client.List(context.Background(), list, client.InNamespace(ns)); err != nil {
			return err
		}
		var conds []metav1.Condition
		switch l := list.(type) {
		case *v1.LoadBalancerList:
			for _, o := range l.Items {
				if o.Spec.Source.Name == source {
					conds = o.Status.Conditions
				}
			}
		case *v1.RouteList:
			for _, o := range l.Items {
				if o.Spec.Source.Name == source {
					conds = o.Status.Conditions
				}
			}
		}
		c := meta.FindStatusCondition(conds, v1.ConditionServing)
		if c == nil || c.Status != status || c.Reason != reason {
			return fmt.Errorf("Serving condition %+v", c)
		}
		return nil
	})
}

// warned waits for a Warning event with reason in the tenant's management namespace.
func (p *globalPair) warned(t *testing.T, cluster, reason string) {
	t.Helper()
	eventually(t, "warning "+reason+" in "+cluster, 60*time.Second, func() error {
		var evs eventsv1.EventList
		if err := p.f.Mgmt.Client.List(context.Background(), &evs, client.InNamespace(tenant.Namespace(cluster))); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Type == corev1.EventTypeWarning && e.Reason == reason {
				return nil
			}
		}
		return fmt.Errorf("none among %d events", len(evs.Items))
	})
}

// failoverCycle kills east's backend in mode and asserts where traffic goes:
// eventually every request reaches west, and back to east once restored.
// When strict, every request sent from the kill on must be answered (by
// either cluster): the data plane hides the failure from clients.
func failoverCycle(t *testing.T, mode string, strict bool, east *killableBackend, send func() (string, error)) {
	t.Helper()
	east.kill(t, mode)
	settle := func(what, want string) {
		t.Helper()
		run := 0
		// Bounded: 60 s worth of requests at most; every request takes time.
		deadline := time.Now().Add(60 * time.Second)
		for run < 10 {
			if time.Now().After(deadline) {
				t.Fatalf("%s (%s): 10 consecutive requests never all reached %s", what, mode, want)
			}
			cluster, err := send()
			switch {
			case err != nil && strict:
				t.Fatalf("%s (%s): a request failed: %v", what, mode, err)
			case err == nil && cluster == want:
				run++
			default:
				run = 0
			}
		}
	}
	settle("failover", "west")
	east.restore(t, mode)
	settle("fail-back", "east")
}

// TestL4GlobalFailoverKillModes: two clusters of one tenant group serve the
// global name web (one VIP, strategy failover). When the priority-0 cluster's
// node port refuses or black-holes connections, every connection goes to the
// priority-1 cluster, and back after it recovers; once the standby is known,
// no client connection fails (connect timeout, ejection, connect attempts).
// The LoadBalancers say which cluster serves (condition Serving, a warning
// event on failover).
func TestL4GlobalFailoverKillModes(t *testing.T) {
	p := startGlobalPair(t, "127.0.90.1-127.0.90.8", "127.0.9.1", "127.0.10.1")
	ctx := context.Background()
	var vips []netip.Addr
	backends := map[string]*killableBackend{}
	for i, name := range []string{"east", "west"} {
		tc := p.tenants[name]
		svc := loadBalancerService("web", corev1.ServicePort{Port: 8080, Protocol: corev1.ProtocolTCP})
		svc.Annotations = map[string]string{v1.AnnotationGlobalName: "web", v1.AnnotationStrategy: "failover", v1.AnnotationPriority: fmt.Sprint(i)}
		if err := tc.Env.Client.Create(ctx, svc); err != nil {
			t.Fatal(err)
		}
		vips = append(vips, waitAddress(t, tc, "web"))
		if err := tc.Env.Client.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
			t.Fatal(err)
		}
		addr := net.JoinHostPort(p.nodes[name], strconv.Itoa(int(svc.Spec.Ports[0].NodePort)))
		backends[name] = startKillable(t, echo.Identity{Cluster: name, Node: name + "-1", Service: "default/web"}, "tcp", addr)
	}
	if vips[0] != vips[1] {
		t.Fatalf("the two clusters got %s and %s, want one global VIP", vips[0], vips[1])
	}
	addr := netip.AddrPortFrom(vips[0], 8080).String()
	servedExactlyBy(t, "the priority-0 cluster serves", addr, 60*time.Second, "east-1")
	send := func() (string, error) {
		id, err := dialIdentity(addr)
		return id.Cluster, err
	}
	p.servingCondition(t, "east", &v1.LoadBalancerList{}, "web", metav1.ConditionTrue, v1.ReasonServing, send)
	// The first cycle also makes the standby known (its first health checks
	// may have run before its backend listened): only where traffic goes counts.
	failoverCycle(t, killRefuse, false, backends["east"], send)
	for _, mode := range []string{killBlackhole, killRefuse} {
		t.Run(mode, func(t *testing.T) {
			backends["east"].kill(t, mode)
			servedExactlyBy(t, "failover to the priority-1 cluster", addr, 60*time.Second, "west-1")
			p.servingCondition(t, "east", &v1.LoadBalancerList{}, "web", metav1.ConditionFalse, v1.ReasonFailedOver, send)
			p.servingCondition(t, "west", &v1.LoadBalancerList{}, "web", metav1.ConditionTrue, v1.ReasonServing, send)
			backends["east"].restore(t, mode)
			servedExactlyBy(t, "back to the priority-0 cluster", addr, 60*time.Second, "east-1")
			p.servingCondition(t, "east", &v1.LoadBalancerList{}, "web", metav1.ConditionTrue, v1.ReasonServing, send)
			p.servingCondition(t, "west", &v1.LoadBalancerList{}, "web", metav1.ConditionFalse, v1.ReasonStandby, send)
			failoverCycle(t, mode, true, backends["east"], send)
		})
	}
	p.warned(t, "east", v1.ReasonFailedOver)
}

// TestL7GlobalFailoverKillModes: an Ingress for the same hostname in two
// clusters of one group (strategy failover). When the priority-0 cluster's
// backend refuses connections, black-holes them or answers 503, every GET is
// answered by the priority-1 cluster, and by the priority-0 one again after
// it recovers; once the standby is known, no GET fails (retries to the other
// priority). The Routes say which cluster serves.
func TestL7GlobalFailoverKillModes(t *testing.T) {
	p := startGlobalPair(t, "127.0.95.1-127.0.95.8", "127.0.15.1", "127.0.16.1")
	ctx := context.Background()
	const host = "site.shop.example.com"
	backends := map[string]*killableBackend{}
	for i, name := range []string{"east", "west"} {
		tc := p.tenants[name]
		ing := ingressOf("site", host, "", map[string]string{"/": "site"})
		ing.Annotations = map[string]string{v1.AnnotationStrategy: "failover", v1.AnnotationPriority: fmt.Sprint(i)}
		for _, o := range []client.Object{clusterIPService("site"), ing} {
			if err := tc.Env.Client.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
		var port int32
		eventually(t, "companion Service of site in "+name, 60*time.Second, func() error {
			var c corev1.Service
			if err := tc.Env.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: "site-fleetlb"}, &c); err != nil {
				return err
			}
			if c.Spec.Type != corev1.ServiceTypeNodePort || len(c.Spec.Ports) == 0 || c.Spec.Ports[0].NodePort == 0 {
				return fmt.Errorf("not ready: %+v", c.Spec)
			}
			port = c.Spec.Ports[0].NodePort
			return nil
		})
		addr := net.JoinHostPort(p.nodes[name], strconv.Itoa(int(port)))
		backends[name] = startKillable(t, echo.Identity{Cluster: name, Node: name + "-1", Service: "default/site-fleetlb"}, "http", addr)
	}
	vip := netip.AddrPortFrom(fleetVIP(t, p.f), harness.HTTPPort).String()
	url := "http://" + host + "/"
	reaches(t, vip, url, nil, "east", "default/site-fleetlb")
	send := func() (string, error) {
		r, err := httpVia(vip, url, nil)
		if err == nil && r.status != http.StatusOK {
			err = fmt.Errorf("status %d", r.status)
		}
		return r.reply.Cluster, err
	}
	p.servingCondition(t, "east", &v1.RouteList{}, "site", metav1.ConditionTrue, v1.ReasonServing, send)
	failoverCycle(t, killRefuse, false, backends["east"], send)
	for _, mode := range []string{kill503, killBlackhole, killRefuse} {
		t.Run(mode, func(t *testing.T) {
			failoverCycle(t, mode, true, backends["east"], send)
		})
	}
	// Status: east fails over and comes back.
	backends["east"].kill(t, killRefuse)
	reaches(t, vip, url, nil, "west", "default/site-fleetlb")
	p.servingCondition(t, "east", &v1.RouteList{}, "site", metav1.ConditionFalse, v1.ReasonFailedOver, send)
	p.servingCondition(t, "west", &v1.RouteList{}, "site", metav1.ConditionTrue, v1.ReasonServing, send)
	p.warned(t, "east", v1.ReasonFailedOver)
	backends["east"].restore(t, killRefuse)
	reaches(t, vip, url, nil, "east", "default/site-fleetlb")
	p.servingCondition(t, "east", &v1.RouteList{}, "site", metav1.ConditionTrue, v1.ReasonServing, send)
	p.servingCondition(t, "west", &v1.RouteList{}, "site", metav1.ConditionFalse, v1.ReasonStandby, send)
}
