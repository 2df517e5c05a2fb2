package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/ccm/service"
	"github.com/fleetlb/fleetlb/internal/echo"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// dialIdentity connects to addr over TCP and reads who answered.
func dialIdentity(addr string) (echo.Identity, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return echo.Identity{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return echo.Identity{}, err
	}
	return echo.ParseLine(line)
}

func udpIdentity(addr string) (echo.Identity, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return echo.Identity{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return echo.Identity{}, err
	}
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		return echo.Identity{}, err
	}
	line, rest, _ := strings.Cut(string(buf[:n]), "\n")
	if rest != "ping" {
		return echo.Identity{}, fmt.Errorf("payload %q not echoed", rest)
	}
	return echo.ParseLine(line)
}

// TestL4TrafficFlowsThroughTheFleet: tenant Services get a VIP and real TCP
// and UDP traffic through fleetlb-proxy reaches the right tenant's nodes.
func TestL4TrafficFlowsThroughTheFleet(t *testing.T) {
	h := newHarness(t)
	f := check(h.StartFleet("127.0.60.1-127.0.60.9"))(t)
	check(f.StartProxy(true))(t)
	a := check(f.AddTenant("a"))(t)
	b := check(f.AddTenant("b"))(t)
	aNodes := map[string]string{"a-1": "127.0.3.1", "a-2": "127.0.3.2"}
	for n, ip := range aNodes {
		if err := a.AddNode(n, ip, "z1"); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.AddNode("b-1", "127.0.4.1", "z1"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	if err := a.Env.Client.Create(ctx, loadBalancerService("web",
		corev1.ServicePort{Name: "tcp", Port: 8080, Protocol: corev1.ProtocolTCP},
		corev1.ServicePort{Name: "udp", Port: 5353, Protocol: corev1.ProtocolUDP})); err != nil {
		t.Fatal(err)
	}
	if err := b.Env.Client.Create(ctx, loadBalancerService("web", corev1.ServicePort{Port: 8080, Protocol: corev1.ProtocolTCP})); err != nil {
		t.Fatal(err)
	}
	va, vb := waitAddress(t, a, "web"), waitAddress(t, b, "web")
	if err := a.ServeNodePorts("default", "web", aNodes); err != nil {
		t.Fatal(err)
	}
	if err := b.ServeNodePorts("default", "web", map[string]string{"b-1": "127.0.4.1"}); err != nil {
		t.Fatal(err)
	}

	// Programmed once the proxy acknowledged the configuration.
	eventually(t, "a/web Programmed", 60*time.Second, func() error {
		var lb v1.LoadBalancer
		if err := f.Mgmt.Client.Get(ctx, client.ObjectKey{Namespace: tenant.Namespace("a"), Name: service.LoadBalancerName("default", "web")}, &lb); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(lb.Status.Conditions, v1.ConditionProgrammed) {
			return fmt.Errorf("conditions %+v", lb.Status.Conditions)
		}
		return nil
	})

	// TCP: both of a's nodes answer through a's VIP, only b's node through b's.
	seen := map[string]bool{}
	eventually(t, "TCP through a's VIP reaches both of a's nodes", 30*time.Second, func() error {
		id, err := dialIdentity(fmt.Sprintf("%s:8080", va))
		if err != nil {
			return err
		}
		if id.Cluster != "a" || id.Service != "default/web" {
			return fmt.Errorf("a's VIP answered by %+v", id)
		}
		seen[id.Node] = true
		if len(seen) < 2 {
			return fmt.Errorf("only %v so far", seen)
		}
		return nil
	})
	for range 10 {
		id, err := dialIdentity(fmt.Sprintf("%s:8080", vb))
		if err != nil {
			t.Fatal(err)
		}
		if id.Cluster != "b" || id.Node != "b-1" {
			t.Fatalf("b's VIP answered by %+v", id)
		}
	}
	// UDP through a's VIP.
	eventually(t, "UDP through a's VIP", 30*time.Second, func() error {
		id, err := udpIdentity(fmt.Sprintf("%s:5353", va))
		if err != nil {
			return err
		}
		if id.Cluster != "a" {
			return fmt.Errorf("answered by %+v", id)
		}
		return nil
	})
}
