package hollow

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	pb "sigs.k8s.io/gateway-api/conformance/echo-basic/grpcechoserver"
	"sigs.k8s.io/gateway-api/conformance/utils/roundtripper"

	"github.com/fleetlb/fleetlb/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	ctrllog.SetLogger(logr.Discard())
	testenv.Main(m, testenv.Options{NoCRDs: true}, &env)
}

// The two nodes of these tests; nothing else in the repository uses 127.0.77.0/24.
var nodeIPs = map[string]string{"node-a": "127.0.77.1", "node-b": "127.0.77.2"}

func startCluster(t *testing.T) *Cluster {
	t.Helper()
	ctx := context.Background()
	for name, ip := range nodeIPs {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if err := env.Client.Create(ctx, n); err != nil && !strings.Contains(err.Error(), "already exists") {
			t.Fatal(err)
		}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(n), n); err != nil {
			t.Fatal(err)
		}
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
		if err := env.Client.Status().Update(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	h, err := Start(ctx, env.Config, Options{Log: testr.NewWithOptions(t, testr.Options{Verbosity: 1})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func namespace(t *testing.T, name string) {
	t.Helper()
	if err := env.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
}

// echoDeployment is a Deployment of the suite's echo-basic image as the
// suite's base manifests write it (the Pod's name and namespace from the
// downward API).
func echoDeployment(ns, name string, replicas int32, env ...corev1.EnvVar) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: name, Image: "registry.k8s.io/gateway-api/echo-basic:v1.5.1",
					Env: append([]corev1.EnvVar{
						{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
						{Name: "NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
					}, env...),
				}}},
			},
		},
	}
}

func nodePortService(ns, name string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"app": name}, Ports: ports},
	}
}

func create(t *testing.T, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := env.Client.Create(context.Background(), o); err != nil {
			t.Fatal(err)
		}
	}
}

// readyPods waits until the Deployment's Pods are exactly want, Ready.
func readyPods(t *testing.T, ns, app string, want int) []corev1.Pod {
	t.Helper()
	var pods corev1.PodList
	testenv.Eventually(t, fmt.Sprintf("%d ready pods of %s", want, app), func() error {
		if err := env.Client.List(context.Background(), &pods, client.InNamespace(ns), client.MatchingLabels{"app": app}); err != nil {
			return err
		}
		if len(pods.Items) != want {
			return fmt.Errorf("%d pods", len(pods.Items))
		}
		for _, p := range pods.Items {
			if !podReady(&p) || p.Status.PodIP == "" {
				return fmt.Errorf("pod %s not ready: %+v", p.Name, p.Status)
			}
		}
		return nil
	})
	return pods.Items
}

// get asks a node port over a new connection and parses echo-basic's answer
// the way the suite does.
func get(addr, host, path string) (roundtripper.CapturedRequest, *http.Response, error) {
	var cr roundtripper.CapturedRequest
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return cr, nil, err
	}
	req.Host = host
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return cr, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return cr, resp, err
	}
	if resp.Header.Get("Content-Type") == "application/json" {
		err = json.Unmarshal(b, &cr)
	}
	return cr, resp, err
}

func TestDeploymentsGetReadyPodsEndpointSlicesAndNodePorts(t *testing.T) {
	startCluster(t)
	ctx := context.Background()
	ns := "hollow-web"
	namespace(t, ns)
	create(t, echoDeployment(ns, "web", 2), nodePortService(ns, "web",
		corev1.ServicePort{Name: "http", Port: 8080, TargetPort: intstr.FromInt32(3000)},
		corev1.ServicePort{Name: "h2c", Port: 8081, TargetPort: intstr.FromInt32(3001), AppProtocol: new("kubernetes.io/h2c")}))

	pods := readyPods(t, ns, "web", 2)
	var names, nodes []string
	for _, p := range pods {
		names = append(names, p.Name)
		nodes = append(nodes, p.Spec.NodeName)
		if ip := netip.MustParseAddr(p.Status.PodIP); !netip.MustParsePrefix("198.18.0.0/16").Contains(ip) {
			t.Errorf("pod %s has IP %s outside the pod CIDR", p.Name, ip)
		}
		if p.Status.HostIP != nodeIPs[p.Spec.NodeName] || p.Status.Phase != corev1.PodRunning {
			t.Errorf("pod %s: host IP %s on %s, phase %s", p.Name, p.Status.HostIP, p.Spec.NodeName, p.Status.Phase)
		}
	}
	slices.Sort(nodes)
	if !slices.Equal(nodes, []string{"node-a", "node-b"}) {
		t.Errorf("pods on nodes %v, want one per node", nodes)
	}
	if pods[0].Status.PodIP == pods[1].Status.PodIP {
		t.Errorf("both pods have IP %s", pods[0].Status.PodIP)
	}
	testenv.Eventually(t, "deployment status", func() error {
		var d appsv1.Deployment
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &d); err != nil {
			return err
		}
		if d.Status.ReadyReplicas != 2 || d.Status.AvailableReplicas != 2 || d.Status.ObservedGeneration != d.Generation {
			return fmt.Errorf("status %+v", d.Status)
		}
		return nil
	})
	testenv.Eventually(t, "endpoint slice", func() error {
		var sl discoveryv1.EndpointSliceList
		if err := env.Client.List(ctx, &sl, client.InNamespace(ns), client.MatchingLabels{discoveryv1.LabelServiceName: "web"}); err != nil {
			return err
		}
		if len(sl.Items) != 1 {
			return fmt.Errorf("%d slices", len(sl.Items))
		}
		s := sl.Items[0]
		var got []string
		for _, e := range s.Endpoints {
			if !*e.Conditions.Ready {
				return fmt.Errorf("endpoint %v not ready", e.Addresses)
			}
			got = append(got, e.TargetRef.Name)
		}
		slices.Sort(got)
		if !slices.Equal(got, names) {
			return fmt.Errorf("endpoints %v, want %v", got, names)
		}
		var ports []string
		for _, p := range s.Ports {
			ports = append(ports, fmt.Sprintf("%s=%d", *p.Name, *p.Port))
		}
		if !slices.Equal(ports, []string{"http=3000", "h2c=3001"}) {
			return fmt.Errorf("ports %v", ports)
		}
		return nil
	})

	var svc corev1.Service
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &svc); err != nil {
		t.Fatal(err)
	}
	httpPort, h2cPort := strconv.Itoa(int(svc.Spec.Ports[0].NodePort)), strconv.Itoa(int(svc.Spec.Ports[1].NodePort))

	// Every node answers as each pod in turn, in echo-basic's JSON.
	for _, ip := range nodeIPs {
		addr := net.JoinHostPort(ip, httpPort)
		seen := map[string]bool{}
		for range 4 {
			var cr roundtripper.CapturedRequest
			testenv.Eventually(t, "echo on "+addr, func() error {
				var err error
				cr, _, err = get(addr, "example.com", "/some//path?q=1")
				return err
			})
			if cr.Path != "/some//path?q=1" || cr.Host != "example.com" || cr.Method != "GET" || cr.Protocol != "HTTP/1.1" ||
				cr.Namespace != ns || cr.HTTPPort != "3000" {
				t.Fatalf("echo %+v", cr)
			}
			seen[cr.Pod] = true
		}
		if got := slices.Sorted(func(yield func(string) bool) {
			for p := range seen {
				if !yield(p) {
					return
				}
			}
		}); !slices.Equal(got, names) {
			t.Errorf("%s answered as %v, want round-robin over %v", addr, got, names)
		}
	}

	// The h2c port speaks HTTP/2 with prior knowledge and refuses HTTP/1.1
	// without an upgrade, as echo-basic does.
	h2 := &http.Client{Timeout: 5 * time.Second, Transport: &http2.Transport{AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}}
	resp, err := h2.Get("http://" + net.JoinHostPort(nodeIPs["node-a"], h2cPort) + "/h2")
	if err != nil {
		t.Fatal(err)
	}
	var cr roundtripper.CapturedRequest
	if err := json.NewDecoder(resp.Body).Decode(&cr); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if cr.Protocol != "HTTP/2.0" || !strings.HasPrefix(cr.Pod, "web-") {
		t.Errorf("h2c echo %+v", cr)
	}
	if _, resp, err := get(net.JoinHostPort(nodeIPs["node-a"], h2cPort), "example.com", "/"); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("HTTP/1.1 on the h2c port: %v, %v", resp, err)
	}

	// Scaled down to one: the other Pod goes, with its endpoint.
	var d appsv1.Deployment
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &d); err != nil {
		t.Fatal(err)
	}
	d.Spec.Replicas = new(int32(1))
	if err := env.Client.Update(ctx, &d); err != nil {
		t.Fatal(err)
	}
	left := readyPods(t, ns, "web", 1)[0].Name
	testenv.Eventually(t, "only "+left+" answers", func() error {
		for range 3 {
			cr, _, err := get(net.JoinHostPort(nodeIPs["node-b"], httpPort), "example.com", "/")
			if err != nil {
				return err
			}
			if cr.Pod != left {
				return fmt.Errorf("answered as %s", cr.Pod)
			}
		}
		return nil
	})

	// The Service goes: its node ports close and its slices are deleted.
	if err := env.Client.Delete(ctx, &svc); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "node port closed", func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(nodeIPs["node-a"], httpPort), time.Second)
		if err == nil {
			c.Close()
			return errors.New("still listening")
		}
		return nil
	})
	testenv.Eventually(t, "slices deleted", func() error {
		var sl discoveryv1.EndpointSliceList
		if err := env.Client.List(ctx, &sl, client.InNamespace(ns)); err != nil {
			return err
		}
		if len(sl.Items) != 0 {
			return fmt.Errorf("%d slices left", len(sl.Items))
		}
		return nil
	})
	// The Deployment goes: so do its Pods (bound Pods are deleted by their kubelet).
	if err := env.Client.Delete(ctx, &d); err != nil {
		t.Fatal(err)
	}
	readyPods(t, ns, "web", 0)
}

func TestGRPCEchoAndNoEndpoints(t *testing.T) {
	startCluster(t)
	ctx := context.Background()
	ns := "hollow-grpc"
	namespace(t, ns)
	create(t, echoDeployment(ns, "grpc", 1, corev1.EnvVar{Name: "GRPC_ECHO_SERVER", Value: "1"}),
		nodePortService(ns, "grpc", corev1.ServicePort{Port: 8080, TargetPort: intstr.FromInt32(3000), AppProtocol: new("kubernetes.io/h2c")}),
		nodePortService(ns, "nobody", corev1.ServicePort{Port: 8080, TargetPort: intstr.FromInt32(3000)}))
	pod := readyPods(t, ns, "grpc", 1)[0]

	var svc, nobody corev1.Service
	for name, s := range map[string]*corev1.Service{"grpc": &svc, "nobody": &nobody} {
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, s); err != nil {
			t.Fatal(err)
		}
	}
	addr := net.JoinHostPort(nodeIPs["node-b"], strconv.Itoa(int(svc.Spec.Ports[0].NodePort)))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("grpc.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	echo := pb.NewGrpcEchoClient(conn)
	var resp *pb.EchoResponse
	testenv.Eventually(t, "gRPC echo on "+addr, func() error {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		resp, err = echo.EchoTwo(cctx, &pb.EchoRequest{})
		return err
	})
	a := resp.GetAssertions()
	if a.GetFullyQualifiedMethod() != "/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/EchoTwo" || a.GetAuthority() != "grpc.example.com" ||
		a.GetContext().GetNamespace() != ns || a.GetContext().GetPod() != pod.Name {
		t.Errorf("gRPC echo %v", a)
	}
	if _, err := echo.EchoThree(ctx, &pb.EchoRequest{}); status.Code(err) != codes.Unimplemented {
		t.Errorf("EchoThree: %v, want Unimplemented", err)
	}

	// A Service with no ready endpoint: the node port takes the connection
	// and closes it.
	var c net.Conn
	testenv.Eventually(t, "node port of a Service without endpoints", func() error {
		c, err = net.DialTimeout("tcp", net.JoinHostPort(nodeIPs["node-a"], strconv.Itoa(int(nobody.Spec.Ports[0].NodePort))), 5*time.Second)
		return err
	})
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("read %d bytes, %v; want EOF", n, err)
	}
	c.Close()
}

// A Service without a selector (headless or not) is served, as kube-proxy
// serves it, from the EndpointSlices someone wrote for it by hand: its node
// port reaches the Pods they name, on their port.
func TestServiceWithoutSelectorUsesItsEndpointSlices(t *testing.T) {
	startCluster(t)
	ctx := context.Background()
	ns := "hollow-manual"
	namespace(t, ns)
	svc := nodePortService(ns, "manual", corev1.ServicePort{Name: "first-port", Port: 8080, TargetPort: intstr.FromInt32(9999)})
	svc.Spec.Selector = nil
	create(t, echoDeployment(ns, "backend", 1), svc)
	pod := readyPods(t, ns, "backend", 1)[0]
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "manual-ip4", Labels: map[string]string{discoveryv1.LabelServiceName: "manual"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: new("first-port"), Port: new(int32(3000)), Protocol: new(corev1.ProtocolTCP)}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{pod.Status.PodIP}, Conditions: discoveryv1.EndpointConditions{Ready: new(true)},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod.Name, UID: pod.UID}}},
	}
	create(t, slice)
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(nodeIPs["node-a"], strconv.Itoa(int(svc.Spec.Ports[0].NodePort)))
	testenv.Eventually(t, "echo through the node port of "+addr, func() error {
		cr, _, err := get(addr, "manual.example.com", "/x")
		if err != nil {
			return err
		}
		if cr.Pod != pod.Name || cr.Path != "/x" {
			return fmt.Errorf("answered by pod %q path %q", cr.Pod, cr.Path)
		}
		return nil
	})
	// The slice names no Pod any more: nothing answers.
	slice.Endpoints = nil
	if err := env.Client.Update(ctx, slice); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "no endpoint", func() error {
		if _, _, err := get(addr, "manual.example.com", "/x"); err == nil {
			return errors.New("still answered")
		}
		return nil
	})
}
