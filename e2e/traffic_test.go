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

// startProxy runs fleetlb-proxy against the manager's xDS server.
func (f *fleet) startProxy(t *testing.T, delta bool) {
	t.Helper()
	start(t, "fleetlb-proxy", "--xds-address", f.xdsAddr, "--fleet", v1.DefaultFleetName, "--node-id", "proxy-1",
		fmt.Sprintf("--delta=%v", delta), "--admin-address", fmt.Sprintf("127.0.0.1:%d", freePort(t)))
}

// serveNodePorts plays kube-proxy: an echo backend on every node address and
// NodePort of the Service, answering as that node.
func serveNodePorts(t *testing.T, tc *tenantCluster, backends *echo.Fleet, svcName string, nodes map[string]string) {
	t.Helper()
	var svc corev1.Service
	if err := tc.env.Client.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: svcName}, &svc); err != nil {
		t.Fatal(err)
	}
	for node, ip := range nodes {
		for _, p := range svc.Spec.Ports {
			id := echo.Identity{Cluster: tc.name, Node: node, Service: "default/" + svcName}
			addr := fmt.Sprintf("%s:%d", ip, p.NodePort)
			if err := backends.Start(tc.name+"/"+node+"/"+addr, id, strings.ToLower(string(p.Protocol)), addr); err != nil {
				t.Fatal(err)
			}
		}
	}
}

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
	f := startFleet(t, "127.0.60.1-127.0.60.9")
	f.startProxy(t, true)
	a := f.addTenant(t, "a")
	b := f.addTenant(t, "b")
	aNodes := map[string]string{"a-1": "127.0.3.1", "a-2": "127.0.3.2"}
	for n, ip := range aNodes {
		a.addNode(t, n, ip, "z1")
	}
	b.addNode(t, "b-1", "127.0.4.1", "z1")
	backends := echo.NewFleet()
	t.Cleanup(func() { _ = backends.Close() })
	ctx := context.Background()

	if err := a.env.Client.Create(ctx, loadBalancerService("web",
		corev1.ServicePort{Name: "tcp", Port: 8080, Protocol: corev1.ProtocolTCP},
		corev1.ServicePort{Name: "udp", Port: 5353, Protocol: corev1.ProtocolUDP})); err != nil {
		t.Fatal(err)
	}
	if err := b.env.Client.Create(ctx, loadBalancerService("web", corev1.ServicePort{Port: 8080, Protocol: corev1.ProtocolTCP})); err != nil {
		t.Fatal(err)
	}
	va, vb := waitAddress(t, a, "web"), waitAddress(t, b, "web")
	serveNodePorts(t, a, backends, "web", aNodes)
	serveNodePorts(t, b, backends, "web", map[string]string{"b-1": "127.0.4.1"})

	// Programmed once the proxy acknowledged the configuration.
	eventually(t, "a/web Programmed", 60*time.Second, func() error {
		var lb v1.LoadBalancer
		if err := f.mgmt.Client.Get(ctx, client.ObjectKey{Namespace: tenant.Namespace("a"), Name: service.LoadBalancerName("default", "web")}, &lb); err != nil {
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
