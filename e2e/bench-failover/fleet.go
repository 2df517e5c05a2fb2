package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/ccm/service"
	"github.com/fleetlb/fleetlb/e2e/harness"
	"github.com/fleetlb/fleetlb/internal/echo"
	"github.com/fleetlb/fleetlb/internal/testenv"
)

// The two tenant clusters of group "shop", one node each; east has priority 0.
var clusters = []struct{ name, node, ip string }{
	{"east", "east-1", "127.0.121.1"},
	{"west", "west-1", "127.0.122.1"},
}

const (
	l4Port = 9090 // weighted: 9091
	host   = "web.shop.example.com"
	wHost  = "webw.shop.example.com"
	gHost  = "grpc.shop.example.com"
)

type fleetEnv struct {
	h       *harness.Harness
	f       *harness.Fleet
	tenants []*harness.Tenant
	dir     string
}

// newFleet starts the installation: management, the two tenants, a proxy.
func newFleet() (*fleetEnv, error) {
	root, err := testenv.ModuleRoot()
	if err != nil {
		return nil, err
	}
	binDir := filepath.Join(root, "bin")
	if err := harness.Build(binDir); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "fleetlb-bench-failover-")
	if err != nil {
		return nil, err
	}
	h, err := harness.New(binDir, dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	e := &fleetEnv{h: h, dir: dir}
	if e.f, err = h.StartFleet("127.0.120.1-127.0.120.8"); err != nil {
		e.close()
		return nil, err
	}
	if _, err := e.f.StartProxy(true); err != nil {
		e.close()
		return nil, err
	}
	for _, c := range clusters {
		tc, err := e.f.AddTenantWith(c.name, v1.TenantSpec{Group: "shop", AddressPool: "vips", Hostnames: []v1.Hostname{"*.shop.example.com"}})
		if err != nil {
			e.close()
			return nil, err
		}
		if err := tc.AddNode(c.node, c.ip, "z1"); err != nil {
			e.close()
			return nil, err
		}
		e.tenants = append(e.tenants, tc)
	}
	return e, nil
}

func (e *fleetEnv) close() { e.h.Close(); os.RemoveAll(e.dir) }

// target is one global name served by both clusters.
type target struct {
	primary, secondary *backend
	// weighted: both clusters serve (weight 1 each) until one fails;
	// otherwise the primary serves and the secondary is its failover.
	weighted bool
	probe    func(timeout time.Duration) probe
	close    func()
}

// backends starts the echo backends of both clusters on the given node ports.
func backends(protocol, service string, nodePorts []int32) (*target, error) {
	var bs []*backend
	for i, c := range clusters {
		b := &backend{id: echo.Identity{Cluster: c.name, Node: c.node, Service: service}, protocol: protocol,
			addr: net.JoinHostPort(c.ip, strconv.Itoa(int(nodePorts[i])))}
		if err := b.start(); err != nil {
			for _, b := range bs {
				b.close()
			}
			return nil, err
		}
		bs = append(bs, b)
	}
	return &target{primary: bs[0], secondary: bs[1], close: func() { bs[0].close(); bs[1].close() }}, nil
}

// globalAnnotations are cluster i's annotations for a strategy: failover
// (east priority 0) or weighted (weight 1 each).
func globalAnnotations(strategy v1.Strategy, i int) map[string]string {
	if strategy == v1.StrategyWeighted {
		return map[string]string{v1.AnnotationStrategy: string(strategy), v1.AnnotationWeight: "1"}
	}
	return map[string]string{v1.AnnotationStrategy: string(strategy), v1.AnnotationPriority: strconv.Itoa(i)}
}

// suffix tells the objects of the weighted cases from the failover ones.
func suffix(strategy v1.Strategy) string {
	if strategy == v1.StrategyWeighted {
		return "w"
	}
	return ""
}

// l4 creates a LoadBalancer Service "web" with global name "web" (weighted:
// "webw") and the strategy in both clusters and waits for the one global VIP.
func (e *fleetEnv) l4(ctx context.Context, strategy v1.Strategy) (*target, error) {
	var vips []string
	var nodePorts []int32
	name, port := "web"+suffix(strategy), int32(l4Port)
	if strategy == v1.StrategyWeighted {
		port++
	}
	for i, tc := range e.tenants {
		ann := globalAnnotations(strategy, i)
		ann[v1.AnnotationGlobalName] = name
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Annotations: ann},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: ptr.To(service.DefaultClass),
				Selector: map[string]string{"app": name}, Ports: []corev1.ServicePort{{Port: port, Protocol: corev1.ProtocolTCP}}},
		}
		if err := tc.Env.Client.Create(ctx, svc); err != nil {
			return nil, err
		}
		ip, err := tc.Address("default", name, 90*time.Second)
		if err != nil {
			return nil, err
		}
		vips = append(vips, ip)
		nodePorts = append(nodePorts, svc.Spec.Ports[0].NodePort)
	}
	if vips[0] != vips[1] {
		return nil, fmt.Errorf("the two clusters got %s and %s, want one global VIP", vips[0], vips[1])
	}
	t, err := backends("tcp", "default/"+name, nodePorts)
	if err != nil {
		return nil, err
	}
	t.weighted = strategy == v1.StrategyWeighted
	addr := net.JoinHostPort(vips[0], strconv.Itoa(int(port)))
	t.probe = func(timeout time.Duration) probe { return l4Probe(addr, timeout) }
	return t, nil
}

// l7 creates a ClusterIP Service "site" and an Ingress for host in both
// clusters with the strategy (weighted: "sitew" for wHost) and waits for the
// companion NodePort Services and the fleet's shared VIP.
func (e *fleetEnv) l7(ctx context.Context, strategy v1.Strategy) (*target, error) {
	return e.l7Of(ctx, strategy, false)
}

// l7gRPC is l7 with a gRPC backend (Service port appProtocol grpc, echo
// health service) on gHost, strategy failover.
func (e *fleetEnv) l7gRPC(ctx context.Context, _ v1.Strategy) (*target, error) {
	return e.l7Of(ctx, v1.StrategyFailover, true)
}

func (e *fleetEnv) l7Of(ctx context.Context, strategy v1.Strategy, grpcBackend bool) (*target, error) {
	var nodePorts []int32
	name, host := "site"+suffix(strategy), host
	if strategy == v1.StrategyWeighted {
		host = wHost
	}
	var appProtocol *string
	if grpcBackend {
		name, host, appProtocol = "grpc", gHost, ptr.To("grpc")
	}
	for i, tc := range e.tenants {
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP, AppProtocol: appProtocol}}}}
		ing := &networkingv1.Ingress{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Annotations: globalAnnotations(strategy, i)},
			Spec: networkingv1.IngressSpec{IngressClassName: ptr.To("fleetlb"), Rules: []networkingv1.IngressRule{{Host: host,
				IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{{
					Path: "/", PathType: ptr.To(networkingv1.PathTypePrefix),
					Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: name,
						Port: networkingv1.ServiceBackendPort{Number: 80}}}}}}}}}},
		}
		for _, o := range []client.Object{svc, ing} {
			if err := tc.Env.Client.Create(ctx, o); err != nil {
				return nil, err
			}
		}
		var port int32
		if err := harness.Eventually(90*time.Second, func() error {
			var c corev1.Service
			if err := tc.Env.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: name + "-fleetlb"}, &c); err != nil {
				return err
			}
			if c.Spec.Type != corev1.ServiceTypeNodePort || len(c.Spec.Ports) == 0 || c.Spec.Ports[0].NodePort == 0 {
				return fmt.Errorf("companion Service of %s in %s is not ready", name, tc.Name)
			}
			port = c.Spec.Ports[0].NodePort
			return nil
		}); err != nil {
			return nil, err
		}
		nodePorts = append(nodePorts, port)
	}
	var vip string
	if err := harness.Eventually(90*time.Second, func() error {
		var pf v1.ProxyFleet
		if err := e.f.Mgmt.Client.Get(ctx, client.ObjectKey{Name: v1.DefaultFleetName}, &pf); err != nil {
			return err
		}
		if len(pf.Status.Addresses) != 1 {
			return fmt.Errorf("fleet addresses %+v", pf.Status.Addresses)
		}
		vip = string(pf.Status.Addresses[0].IP)
		return nil
	}); err != nil {
		return nil, err
	}
	protocol := "http"
	if grpcBackend {
		protocol = "grpc"
	}
	t, err := backends(protocol, "default/"+name+"-fleetlb", nodePorts)
	if err != nil {
		return nil, err
	}
	t.weighted = strategy == v1.StrategyWeighted
	addr := net.JoinHostPort(vip, strconv.Itoa(harness.HTTPPort))
	t.probe = func(timeout time.Duration) probe { return l7Probe(addr, host, timeout) }
	if grpcBackend {
		east := t.primary.id.GRPCService()
		t.probe = func(timeout time.Duration) probe { return grpcProbe(addr, host, east, t.secondary.id.Cluster, timeout) }
	}
	return t, nil
}
