package fleet

import (
	"context"
	"errors"
	"fmt"
	"k8s.io/client-go/util/retry"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/envoy/server"
	"github.com/fleetlb/fleetlb/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, testenv.Options{}, &env) }

// The real xDS server is what the controller reads.
var _ XDS = (*server.Server)(nil)

var seq atomic.Int32

func uniq(prefix string) string { return fmt.Sprintf("%s-%d", prefix, seq.Add(1)) }

// stubXDS plays the xDS server's view of proxies; it reports changes like a ProxyNotifier.
type stubXDS struct {
	mu         sync.Mutex
	connected  map[string]int
	version    map[string]string
	gen, acked map[string]uint64
	onAcked    []func(string, uint64)
	onProxies  []func(string)
	reads      atomic.Int64 // ConnectedProxies calls: one per reconcile that got to status
}

func newStub() *stubXDS {
	return &stubXDS{connected: map[string]int{}, version: map[string]string{}, gen: map[string]uint64{}, acked: map[string]uint64{}}
}

func (s *stubXDS) ConnectedProxies(f string) int {
	s.reads.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connected[f]
}
func (s *stubXDS) Version(f string) (string, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version[f], s.gen[f]
}
func (s *stubXDS) AckedGeneration(f string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acked[f]
}
func (s *stubXDS) OnAcked(fn func(string, uint64))  { s.onAcked = append(s.onAcked, fn) }
func (s *stubXDS) OnProxiesChanged(fn func(string)) { s.onProxies = append(s.onProxies, fn) }

func (s *stubXDS) setProxies(f string, n int) {
	s.mu.Lock()
	s.connected[f] = n
	s.mu.Unlock()
	for _, fn := range s.onProxies {
		fn(f)
	}
}

func (s *stubXDS) serve(f, version string, gen uint64, acked bool) {
	s.mu.Lock()
	s.version[f], s.gen[f] = version, gen
	if acked {
		s.acked[f] = gen
	}
	s.mu.Unlock()
	for _, fn := range s.onAcked {
		fn(f, s.acked[f])
	}
}

const xdsAddr = "fleetlb-manager.fleetlb-system.svc:18000"

// start runs the controller with its own namespace for the fleets' objects.
func start(t *testing.T, opts Options) (*stubXDS, string) {
	t.Helper()
	x, ns, _ := startStoppable(t, opts)
	return x, ns
}

func startStoppable(t *testing.T, opts Options) (*stubXDS, string, func()) {
	t.Helper()
	ns := opts.Namespace
	if ns == "" {
		ns = uniq("fleets")
		if err := env.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
		opts.Namespace = ns
	}
	if opts.XDSAddress == "" {
		opts.XDSAddress = xdsAddr
	}
	mgr := env.NewManager(t)
	x := newStub()
	if err := (&Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("fleet"), XDS: x, Options: opts}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	return x, ns, testenv.Run(t, mgr)
}

// hashOf is the bootstrap hash of a fleet's ConfigMap.
func hashOf(cm *corev1.ConfigMap) string {
	files := map[string][]byte{}
	for k, v := range cm.Data {
		files[k] = []byte(v)
	}
	return filesHash(files)
}

func createFleet(t *testing.T, f *v1.ProxyFleet) *v1.ProxyFleet {
	t.Helper()
	if err := env.Client.Create(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), f) })
	return f
}

func get[T client.Object](t *testing.T, ns, name string, obj T) T {
	t.Helper()
	testenv.Eventually(t, fmt.Sprintf("%T %s/%s", obj, ns, name), func() error {
		return env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, obj)
	})
	return obj
}

func condition(t *testing.T, name, typ string, want metav1.ConditionStatus, reason string) *v1.ProxyFleet {
	t.Helper()
	var f v1.ProxyFleet
	testenv.Eventually(t, fmt.Sprintf("fleet %s %s=%s/%s", name, typ, want, reason), func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKey{Name: name}, &f); err != nil {
			return err
		}
		c := meta.FindStatusCondition(f.Status.Conditions, typ)
		if c == nil || c.Status != want || c.Reason != reason || c.ObservedGeneration != f.Generation {
			return fmt.Errorf("condition %+v", c)
		}
		return nil
	})
	return &f
}

func TestFleetObjects(t *testing.T) {
	_, ns := start(t, Options{Delta: true})
	f := createFleet(t, &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: uniq("edge")}, Spec: v1.ProxyFleetSpec{
		Replicas: ptr.To(int32(3)), Image: "envoyproxy/envoy:v1.36.9",
		Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m")}},
		HTTP:      &v1.FleetListener{Port: 8080}, HTTPS: &v1.FleetListener{Port: 8443}, VIP: "127.0.77.1",
	}})
	name := ObjectName(f.Name)

	cm := get(t, ns, name, &corev1.ConfigMap{})
	var boot struct {
		Node             struct{ Cluster string } `json:"node"`
		DynamicResources struct {
			AdsConfig struct {
				APIType string `json:"api_type"`
			} `json:"ads_config"`
		} `json:"dynamic_resources"`
		StaticResources struct {
			Clusters []struct {
				Name           string
				LoadAssignment struct {
					Endpoints []struct {
						LbEndpoints []struct {
							Endpoint struct {
								Address struct {
									SocketAddress struct {
										Address   string
										PortValue int `json:"port_value"`
									} `json:"socket_address"`
								}
							}
						} `json:"lb_endpoints"`
					}
				} `json:"load_assignment"`
			}
		} `json:"static_resources"`
	}
	if err := yaml.Unmarshal([]byte(cm.Data[BootstrapKey]), &boot); err != nil {
		t.Fatalf("bootstrap: %v\n%s", err, cm.Data[BootstrapKey])
	}
	sa := boot.StaticResources.Clusters[0].LoadAssignment.Endpoints[0].LbEndpoints[0].Endpoint.Address.SocketAddress
	if boot.Node.Cluster != f.Name || boot.DynamicResources.AdsConfig.APIType != "DELTA_GRPC" ||
		fmt.Sprintf("%s:%d", sa.Address, sa.PortValue) != xdsAddr {
		t.Errorf("bootstrap node.cluster=%q api=%q xds=%s:%d, want %q DELTA_GRPC %s", boot.Node.Cluster,
			boot.DynamicResources.AdsConfig.APIType, sa.Address, sa.PortValue, f.Name, xdsAddr)
	}

	acct := get(t, ns, name, &corev1.ServiceAccount{})
	if acct.AutomountServiceAccountToken == nil || *acct.AutomountServiceAccountToken {
		t.Error("the Envoy ServiceAccount mounts a token")
	}

	dep := get(t, ns, name, &appsv1.Deployment{})
	c := dep.Spec.Template.Spec.Containers[0]
	if *dep.Spec.Replicas != 3 || c.Image != "envoyproxy/envoy:v1.36.9" || c.Resources.Requests.Cpu().String() != "500m" {
		t.Errorf("deployment replicas=%d image=%s cpu=%s", *dep.Spec.Replicas, c.Image, c.Resources.Requests.Cpu())
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/ready" || p.HTTPGet.Port.IntValue() != HealthPort {
		t.Errorf("readiness probe %+v, want GET /ready on %d", p, HealthPort)
	}
	if got := dep.Spec.Template.Annotations[AnnotationBootstrapHash]; got != hashOf(cm) {
		t.Errorf("pod template bootstrap hash %q does not match the ConfigMap", got)
	}
	if dep.Spec.Template.Spec.ServiceAccountName != name || dep.Spec.Template.Spec.Volumes[0].ConfigMap.Name != name ||
		c.VolumeMounts[0].MountPath+"/"+BootstrapKey != c.Args[1] {
		t.Errorf("pod does not run with its ServiceAccount and the bootstrap: %+v %+v", dep.Spec.Template.Spec.Volumes, c.Args)
	}
	if !strings.Contains(strings.Join(c.Args, " "), "--service-node $(POD_NAME) --service-cluster "+f.Name) {
		t.Errorf("envoy args %q do not name the node and fleet", c.Args)
	}

	svc := get(t, ns, name, &corev1.Service{})
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || len(svc.Spec.Ports) != 2 ||
		svc.Spec.Ports[0].Port != 8080 || svc.Spec.Ports[1].Port != 8443 || svc.Spec.LoadBalancerIP != "127.0.77.1" {
		t.Errorf("service type=%s ports=%+v lbIP=%s", svc.Spec.Type, svc.Spec.Ports, svc.Spec.LoadBalancerIP)
	}
	for _, o := range []client.Object{cm, acct, dep, svc} {
		if ref := metav1.GetControllerOf(o); ref == nil || ref.UID != f.UID || ref.Kind != "ProxyFleet" {
			t.Errorf("%T %s is not controlled by the fleet: %+v", o, o.GetName(), ref)
		}
	}
	condition(t, f.Name, v1.ConditionReady, metav1.ConditionFalse, v1.ReasonPending)
}

func TestFleetDriftCorrected(t *testing.T) {
	ctx := context.Background()
	_, ns := start(t, Options{})
	f := createFleet(t, &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: uniq("drift")}})
	name := ObjectName(f.Name)
	dep := get(t, ns, name, &appsv1.Deployment{})
	want := dep.Spec.Template.Spec.Containers[0].Image

	// Someone scales it and swaps the image: both come back.
	dep.Spec.Replicas = ptr.To(int32(7))
	dep.Spec.Template.Spec.Containers[0].Image = "example.com/other:1"
	if err := env.Client.Update(ctx, dep); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "deployment corrected", func() error {
		var d appsv1.Deployment
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(dep), &d); err != nil {
			return err
		}
		if *d.Spec.Replicas != 2 || d.Spec.Template.Spec.Containers[0].Image != want {
			return fmt.Errorf("replicas %d image %s", *d.Spec.Replicas, d.Spec.Template.Spec.Containers[0].Image)
		}
		return nil
	})

	// Deleted objects are recreated.
	for _, o := range []client.Object{&appsv1.Deployment{}, &corev1.ConfigMap{}, &corev1.Service{}} {
		old := get(t, ns, name, o)
		uid := old.GetUID()
		if err := env.Client.Delete(ctx, old); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, fmt.Sprintf("%T recreated", o), func() error {
			if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, o); err != nil {
				return err
			}
			if o.GetUID() == uid {
				return errors.New("still the old object")
			}
			return nil
		})
	}

	// A changed bootstrap is put back.
	cm := get(t, ns, name, &corev1.ConfigMap{})
	cm.Data[BootstrapKey] = "garbage"
	if err := env.Client.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "bootstrap restored", func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(cm), cm); err != nil {
			return err
		}
		if !strings.Contains(cm.Data[BootstrapKey], xdsAddr[:strings.IndexByte(xdsAddr, ':')]) {
			return errors.New("bootstrap not restored")
		}
		return nil
	})
}

func TestFleetSpecChangeRollsTemplate(t *testing.T) {
	ctx := context.Background()
	_, ns := start(t, Options{})
	f := createFleet(t, &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: uniq("roll")}})
	name := ObjectName(f.Name)
	before := get(t, ns, name, &appsv1.Deployment{})

	updateFleet(t, f, func(f *v1.ProxyFleet) {
		f.Spec.Image = "envoyproxy/envoy:v1.37.0"
		f.Spec.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}
	})
	testenv.Eventually(t, "template follows the spec", func() error {
		var d appsv1.Deployment
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(before), &d); err != nil {
			return err
		}
		c := d.Spec.Template.Spec.Containers[0]
		if c.Image != f.Spec.Image || c.Resources.Limits.Memory().String() != "1Gi" {
			return fmt.Errorf("image %s memory limit %s", c.Image, c.Resources.Limits.Memory())
		}
		if d.Generation == before.Generation {
			return errors.New("generation did not move")
		}
		return nil
	})
}

func TestBootstrapChangeRollsPods(t *testing.T) {
	ctx := context.Background()
	ns := uniq("fleets")
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	_, _, stop := startStoppable(t, Options{Namespace: ns, XDSAddress: "10.0.0.1:18000"})
	f := createFleet(t, &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: uniq("boot")}})
	before := get(t, ns, ObjectName(f.Name), &appsv1.Deployment{}).Spec.Template.Annotations[AnnotationBootstrapHash]

	// The manager restarts with another xDS address: new bootstrap, new pods.
	stop()
	_, _ = start(t, Options{Namespace: ns, XDSAddress: "10.0.0.2:18000"})
	testenv.Eventually(t, "pod template hash follows the bootstrap", func() error {
		var d appsv1.Deployment
		var cm corev1.ConfigMap
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: ObjectName(f.Name)}, &d); err != nil {
			return err
		}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: ObjectName(f.Name)}, &cm); err != nil {
			return err
		}
		h := d.Spec.Template.Annotations[AnnotationBootstrapHash]
		if !strings.Contains(cm.Data[BootstrapKey], "10.0.0.2") || h == before || h != hashOf(&cm) {
			return fmt.Errorf("hash %s (before %s)", h, before)
		}
		return nil
	})
}

func TestFleetStatus(t *testing.T) {
	ctx := context.Background()
	x, ns := start(t, Options{})
	f := createFleet(t, &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: uniq("status")}, Spec: v1.ProxyFleetSpec{Replicas: ptr.To(int32(2))}})
	condition(t, f.Name, v1.ConditionProgrammed, metav1.ConditionFalse, v1.ReasonNoProxies)

	// The Deployment's ready replicas (envtest runs no deployment controller: set them).
	dep := get(t, ns, ObjectName(f.Name), &appsv1.Deployment{})
	dep.Status = appsv1.DeploymentStatus{ObservedGeneration: dep.Generation, Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 1}
	if err := env.Client.Status().Update(ctx, dep); err != nil {
		t.Fatal(err)
	}
	if got := condition(t, f.Name, v1.ConditionReady, metav1.ConditionFalse, v1.ReasonPending); got.Status.ReadyReplicas != 1 {
		testenv.Eventually(t, "readyReplicas 1", func() error {
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(f), got); err != nil || got.Status.ReadyReplicas != 1 {
				return fmt.Errorf("readyReplicas %d %v", got.Status.ReadyReplicas, err)
			}
			return nil
		})
	}
	dep.Status.ReadyReplicas, dep.Status.AvailableReplicas = 2, 2
	if err := env.Client.Status().Update(ctx, dep); err != nil {
		t.Fatal(err)
	}
	if got := condition(t, f.Name, v1.ConditionReady, metav1.ConditionTrue, v1.ReasonReady); got.Status.ReadyReplicas != 2 {
		t.Errorf("readyReplicas %d, want 2", got.Status.ReadyReplicas)
	}

	// Proxies connect, then acknowledge version a.
	x.setProxies(f.Name, 2)
	got := condition(t, f.Name, v1.ConditionProgrammed, metav1.ConditionFalse, v1.ReasonPending)
	if got.Status.ConnectedProxies != 2 || got.Status.ConfigVersion != "" {
		t.Errorf("connected %d version %q, want 2 and none", got.Status.ConnectedProxies, got.Status.ConfigVersion)
	}
	x.serve(f.Name, "a", 1, true)
	if got := condition(t, f.Name, v1.ConditionProgrammed, metav1.ConditionTrue, v1.ReasonProgrammed); got.Status.ConfigVersion != "a" {
		t.Errorf("configVersion %q, want a", got.Status.ConfigVersion)
	}
	// Version b is served but not yet acknowledged: status keeps a.
	x.serve(f.Name, "b", 2, false)
	if got := condition(t, f.Name, v1.ConditionProgrammed, metav1.ConditionFalse, v1.ReasonPending); got.Status.ConfigVersion != "a" {
		t.Errorf("configVersion %q before the ACK, want a", got.Status.ConfigVersion)
	}
	x.serve(f.Name, "b", 2, true)
	if got := condition(t, f.Name, v1.ConditionProgrammed, metav1.ConditionTrue, v1.ReasonProgrammed); got.Status.ConfigVersion != "b" {
		t.Errorf("configVersion %q, want b", got.Status.ConfigVersion)
	}
	x.setProxies(f.Name, 0)
	if got := condition(t, f.Name, v1.ConditionProgrammed, metav1.ConditionFalse, v1.ReasonNoProxies); got.Status.ConnectedProxies != 0 {
		t.Errorf("connected %d, want 0", got.Status.ConnectedProxies)
	}
}

func TestFleetNoRewriteWhenUnchanged(t *testing.T) {
	ctx := context.Background()
	x, ns := start(t, Options{})
	f := createFleet(t, &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: uniq("quiet")}, Spec: v1.ProxyFleetSpec{
		Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1000m")}},
	}})
	condition(t, f.Name, v1.ConditionProgrammed, metav1.ConditionFalse, v1.ReasonNoProxies)
	objs := []client.Object{&appsv1.Deployment{}, &corev1.ConfigMap{}, &corev1.Service{}, &corev1.ServiceAccount{}}
	versions := func() []string {
		var rvs []string
		for _, o := range objs {
			rvs = append(rvs, get(t, ns, ObjectName(f.Name), o).GetResourceVersion())
		}
		var cur v1.ProxyFleet
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(f), &cur); err != nil {
			t.Fatal(err)
		}
		return append(rvs, cur.ResourceVersion)
	}
	before := versions()

	// Several reconciles that change nothing: a label on the fleet (no new
	// generation, but an event) and xDS notifications with the same counts.
	reads := x.reads.Load()
	updateFleet(t, f, func(f *v1.ProxyFleet) {
		f.Labels = map[string]string{"touched": "yes"}
	})
	before[len(before)-1] = f.ResourceVersion
	// One trigger at a time: the work queue folds triggers that arrive
	// together into one reconcile.
	reconciledSince := func(what string, n int64) {
		testenv.Eventually(t, "reconciled after "+what, func() error {
			if x.reads.Load() < n+1 {
				return errors.New("not yet")
			}
			return nil
		})
	}
	reconciledSince("the label", reads)
	for range 2 {
		reads = x.reads.Load()
		x.setProxies(f.Name, 0)
		reconciledSince("an xDS notification", reads)
	}
	after := versions()
	for i := range before {
		if before[i] != after[i] {
			t.Errorf("%T rewritten without a change: resourceVersion %s → %s", append(objs, f)[i], before[i], after[i])
		}
	}
}

func TestFleetExposure(t *testing.T) {
	ctx := context.Background()
	_, ns := start(t, Options{})
	f := createFleet(t, &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: uniq("host")}})
	name := ObjectName(f.Name)
	if svc := get(t, ns, name, &corev1.Service{}); svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		t.Errorf("default exposure service type %s, want LoadBalancer", svc.Spec.Type)
	}

	// HostNetwork: Envoy in the host network, a ClusterIP Service for in-cluster clients.
	updateFleet(t, f, func(f *v1.ProxyFleet) {
		f.Spec.Exposure = v1.ExposureHostNetwork
	})
	testenv.Eventually(t, "host network", func() error {
		var dep appsv1.Deployment
		var svc corev1.Service
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &dep); err != nil {
			return err
		}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &svc); err != nil {
			return err
		}
		if !dep.Spec.Template.Spec.HostNetwork || dep.Spec.Template.Spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
			return errors.New("HostNetwork exposure does not run Envoy in the host network")
		}
		if svc.Spec.Type != corev1.ServiceTypeClusterIP {
			return fmt.Errorf("HostNetwork exposure service type %s, want ClusterIP", svc.Spec.Type)
		}
		return nil
	})

	// None: proxies run elsewhere; only the bootstrap stays.
	updateFleet(t, f, func(f *v1.ProxyFleet) {
		f.Spec.Exposure = v1.ExposureNone
	})
	for _, o := range []client.Object{&appsv1.Deployment{}, &corev1.Service{}, &corev1.ServiceAccount{}} {
		testenv.Eventually(t, fmt.Sprintf("%T removed", o), func() error {
			err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, o)
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("still there (%v)", err)
		})
	}
	get(t, ns, name, &corev1.ConfigMap{})
	condition(t, f.Name, v1.ConditionReady, metav1.ConditionTrue, v1.ReasonReady)
}

func TestFleetBadSpecReported(t *testing.T) {
	ctx := context.Background()
	_, ns := start(t, Options{})
	long := createFleet(t, &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: uniq(strings.Repeat("x", 60))}})
	clash := createFleet(t, &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: uniq("clash")}, Spec: v1.ProxyFleetSpec{
		HTTP: &v1.FleetListener{Port: 8000}, HTTPS: &v1.FleetListener{Port: 8000}}})
	good := createFleet(t, &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: uniq("good")}})

	condition(t, long.Name, v1.ConditionReady, metav1.ConditionFalse, v1.ReasonInvalidSpec)
	condition(t, clash.Name, v1.ConditionReady, metav1.ConditionFalse, v1.ReasonPortConflict)
	get(t, ns, ObjectName(good.Name), &appsv1.Deployment{})
	var d appsv1.Deployment
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: ObjectName(clash.Name)}, &d); !apierrors.IsNotFound(err) {
		t.Errorf("a fleet with clashing ports got a Deployment (%v)", err)
	}
	testenv.Eventually(t, "warning events", func() error {
		var evs eventsv1.EventList
		if err := env.Client.List(ctx, &evs); err != nil {
			return err
		}
		seen := map[string]string{}
		for _, e := range evs.Items {
			if e.Regarding.Kind == "ProxyFleet" && e.Type == corev1.EventTypeWarning {
				seen[e.Regarding.Name] = e.Reason
			}
		}
		if seen[long.Name] != v1.ReasonInvalidSpec || seen[clash.Name] != v1.ReasonPortConflict {
			return fmt.Errorf("events %v", seen)
		}
		return nil
	})
}

func TestFleetWaitsForNamespace(t *testing.T) {
	ctx := context.Background()
	ns := uniq("late")
	_, _ = start(t, Options{Namespace: ns})
	f := createFleet(t, &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: uniq("late")}})
	condition(t, f.Name, v1.ConditionReady, metav1.ConditionFalse, "NamespaceNotFound")
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	get(t, ns, ObjectName(f.Name), &appsv1.Deployment{})
}

func TestDefaultFleet(t *testing.T) {
	ctx := context.Background()
	var list v1.ProxyFleetList
	if err := env.Client.List(ctx, &list); err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		if err := env.Client.Delete(ctx, &list.Items[i]); err != nil {
			t.Fatal(err)
		}
	}
	d := &DefaultFleet{Client: env.Client, Exposure: v1.ExposureNone}
	if created, err := d.Ensure(ctx); err != nil || !created {
		t.Fatalf("Ensure with no fleets: created=%v err=%v", created, err)
	}
	var f v1.ProxyFleet
	if err := env.Client.Get(ctx, client.ObjectKey{Name: v1.DefaultFleetName}, &f); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, &f) })
	if f.Spec.Exposure != v1.ExposureNone || *f.Spec.Replicas != 2 || f.Spec.HTTP.Port != 80 {
		t.Errorf("default fleet spec %+v", f.Spec)
	}
	if created, err := d.Ensure(ctx); err != nil || created {
		t.Errorf("second Ensure: created=%v err=%v", created, err)
	}
	// A fleet of another name counts as "a fleet exists".
	if err := env.Client.Delete(ctx, &f); err != nil {
		t.Fatal(err)
	}
	createFleet(t, &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: uniq("other")}})
	if created, err := d.Ensure(ctx); err != nil || created {
		t.Errorf("Ensure with another fleet: created=%v err=%v", created, err)
	}
}

func TestContains(t *testing.T) {
	have := map[string]any{"a": int64(1), "b": []any{map[string]any{"x": "y", "z": true}}, "c": "s"}
	for _, c := range []struct {
		want map[string]any
		ok   bool
	}{
		{map[string]any{"a": int64(1)}, true},
		{map[string]any{"b": []any{map[string]any{"x": "y"}}}, true},
		{map[string]any{"b": []any{map[string]any{"x": "n"}}}, false},
		{map[string]any{"b": []any{map[string]any{"x": "y"}, map[string]any{}}}, false},
		{map[string]any{"d": map[string]any{}, "e": ""}, true},
		{map[string]any{"d": "v"}, false},
		{map[string]any{"a": int64(2)}, false},
	} {
		if got := contains(have, c.want); got != c.ok {
			t.Errorf("contains(%v) = %v, want %v", c.want, got, c.ok)
		}
	}
}

// updateFleet changes a ProxyFleet as the test's client, again on a
// conflict: the controller writes its status meanwhile. f is left as stored.
func updateFleet(t *testing.T, f *v1.ProxyFleet, change func(*v1.ProxyFleet)) {
	t.Helper()
	ctx := context.Background()
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(f), f); err != nil {
			return err
		}
		change(f)
		return env.Client.Update(ctx, f)
	}); err != nil {
		t.Fatal(err)
	}
}
