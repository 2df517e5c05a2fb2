package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	servicehelper "k8s.io/cloud-provider/service/helpers"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/testenv"
)

var tenantEnv, mgmtEnv *testenv.Env

const mgmtNS = "tenant-a"

func TestMain(m *testing.M) {
	var err error
	if tenantEnv, err = testenv.New(testenv.Options{NoCRDs: true}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if mgmtEnv, err = testenv.New(testenv.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		_ = tenantEnv.Stop()
		os.Exit(1)
	}
	code := run(m)
	_ = tenantEnv.Stop()
	_ = mgmtEnv.Stop()
	os.Exit(code)
}

func run(m *testing.M) int {
	if err := mgmtEnv.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: mgmtNS}}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	stop, err := startCCM()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer stop()
	return m.Run()
}

// startCCM runs the controller as the binary does: a manager on the tenant
// cluster plus a cache of the tenant's management namespace.
func startCCM() (func(), error) {
	mgr, err := ctrl.NewManager(tenantEnv.Config, ctrl.Options{Scheme: tenantEnv.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}})
	if err != nil {
		return nil, err
	}
	mgmt, err := cluster.New(mgmtEnv.Config, func(o *cluster.Options) {
		o.Scheme = mgmtEnv.Scheme
		o.Cache.DefaultNamespaces = map[string]cache.Config{mgmtNS: {}}
	})
	if err != nil {
		return nil, err
	}
	if err := mgr.Add(mgmt); err != nil {
		return nil, err
	}
	told = &countingRecorder{EventRecorder: mgr.GetEventRecorder("fleetlb-ccm"), n: map[string]int{}}
	r := &Reconciler{
		Tenant: mgr.GetClient(), Mgmt: mgmt.GetClient(), Namespace: mgmtNS, ClusterName: "cluster-a",
		Recorder: told,
	}
	if err := r.SetupWithManager(mgr, mgmt); err != nil {
		return nil, err
	}
	if err := testenv.ReleaseAddresses(mgr, mgmt); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = mgr.Start(ctx); close(done) }()
	return func() { cancel(); <-done }, nil
}

// countingRecorder counts the events recorded per object and reason (the
// events API folds repeats into a series, so the API alone cannot tell).
type countingRecorder struct {
	recorder.EventRecorder
	mu sync.Mutex
	n  map[string]int // "<namespace>/<name>/<reason>" → events
}

var told *countingRecorder

func (c *countingRecorder) Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any) {
	if o, ok := regarding.(client.Object); ok {
		c.mu.Lock()
		c.n[o.GetNamespace()+"/"+o.GetName()+"/"+reason]++
		c.mu.Unlock()
	}
	c.EventRecorder.Eventf(regarding, related, eventtype, reason, action, note, args...)
}

func (c *countingRecorder) count(ns, name, reason string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[ns+"/"+name+"/"+reason]
}

func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	testenv.Eventually(t, what, f)
}

var seq atomic.Int32

// testNamespace gives each test (and each -count repetition) its own tenant namespace.
func testNamespace(t *testing.T) string {
	t.Helper()
	ns := fmt.Sprintf("t%d", seq.Add(1))
	if err := tenantEnv.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	return ns
}

func lbService(ns, name string, mutate func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{
			Type:              corev1.ServiceTypeLoadBalancer,
			LoadBalancerClass: ptr.To(DefaultClass),
			Selector:          map[string]string{"app": name},
			Ports:             []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt(8080), Protocol: corev1.ProtocolTCP}},
		},
	}
	if mutate != nil {
		mutate(s)
	}
	return s
}

func getLB(ns, name string) (*v1.LoadBalancer, error) {
	var lb v1.LoadBalancer
	err := mgmtEnv.Client.Get(context.Background(), client.ObjectKey{Namespace: mgmtNS, Name: LoadBalancerName(ns, name)}, &lb)
	return &lb, err
}

func TestServiceBecomesLoadBalancerAndGetsItsAddress(t *testing.T) {
	ctx := context.Background()
	ns := testNamespace(t)
	svc := lbService(ns, "web", func(s *corev1.Service) {
		s.Annotations = map[string]string{v1.AnnotationProxyProtocol: "v2", v1.AnnotationGlobalName: "web", v1.AnnotationStrategy: "failover", v1.AnnotationPriority: "1"}
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP})
		s.Spec.LoadBalancerSourceRanges = []string{"127.0.0.0/8", "10.0.0.0/8"}
		s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	})
	if err := tenantEnv.Client.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	var lb *v1.LoadBalancer
	eventually(t, "management LoadBalancer", func() (err error) { lb, err = getLB(ns, "web"); return err })
	if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
		t.Fatal(err)
	}
	if !servicehelper.HasLBFinalizer(svc) {
		t.Fatal("Service has no cleanup finalizer")
	}
	if !slices.Equal(lb.Finalizers, []string{v1.FinalizerAddressRelease}) {
		t.Errorf("LoadBalancer created with finalizers %v, want the manager's %s (admission then writes only status)", lb.Finalizers, v1.FinalizerAddressRelease)
	}
	s := lb.Spec
	if s.Source != (v1.ServiceSource{Kind: v1.SourceService, Cluster: "cluster-a", Namespace: ns, Name: "web", UID: string(svc.UID)}) {
		t.Errorf("source %+v", s.Source)
	}
	if len(s.Ports) != 2 || s.Ports[0].NodePort != v1.PortNumber(svc.Spec.Ports[0].NodePort) || s.Ports[1].Protocol != v1.ProtocolUDP || s.Ports[1].NodePort == 0 {
		t.Errorf("ports %+v (service %+v)", s.Ports, svc.Spec.Ports)
	}
	if strings.Join([]string{string(s.SourceRanges[0]), string(s.SourceRanges[1])}, ",") != "10.0.0.0/8,127.0.0.0/8" {
		t.Errorf("source ranges %v", s.SourceRanges)
	}
	if s.SessionAffinity != v1.SessionAffinityClientIP || s.ProxyProtocol != v1.ProxyProtocolV2 {
		t.Errorf("affinity %q proxy protocol %q", s.SessionAffinity, s.ProxyProtocol)
	}
	if hc := s.HealthCheck; hc == nil || hc.Type != v1.HealthCheckHTTP || hc.Path != "/healthz" || int32(*hc.NodePort) != svc.Spec.HealthCheckNodePort {
		t.Errorf("externalTrafficPolicy Local health check %+v (healthCheckNodePort %d)", hc, svc.Spec.HealthCheckNodePort)
	}
	if g := s.Global; g == nil || g.Name != "web" || g.Strategy != v1.StrategyFailover || *g.Priority != 1 {
		t.Errorf("global %+v", g)
	}

	// The manager allocates an address: it is on the Service at once, as ipMode Proxy.
	lb.Status.Addresses = []v1.Address{{IP: "127.0.10.5", IPMode: v1.IPModeProxy}}
	if err := mgmtEnv.Client.Status().Update(ctx, lb); err != nil {
		t.Fatal(err)
	}
	eventually(t, "address on the Service", func() error {
		if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
			return err
		}
		ing := svc.Status.LoadBalancer.Ingress
		if len(ing) != 1 || ing[0].IP != "127.0.10.5" || ing[0].IPMode == nil || *ing[0].IPMode != corev1.LoadBalancerIPModeProxy {
			return fmt.Errorf("ingress %+v", ing)
		}
		return nil
	})

	// A spec change of the Service flows to the management object and the
	// address stays.
	svc.Spec.LoadBalancerSourceRanges = nil
	if err := tenantEnv.Client.Update(ctx, svc); err != nil {
		t.Fatal(err)
	}
	eventually(t, "source ranges removed", func() error {
		lb, err := getLB(ns, "web")
		if err != nil || len(lb.Spec.SourceRanges) != 0 {
			return fmt.Errorf("%v %v", err, lb.Spec.SourceRanges)
		}
		return nil
	})
	if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
		t.Fatal(err)
	}
	if len(svc.Status.LoadBalancer.Ingress) != 1 || svc.Status.LoadBalancer.Ingress[0].IP != "127.0.10.5" {
		t.Fatalf("status after a spec update: %+v", svc.Status)
	}
}

func TestRefusalIsAnEventOnTheService(t *testing.T) {
	ctx := context.Background()
	ns := testNamespace(t)
	svc := lbService(ns, "taken", func(s *corev1.Service) { s.Annotations = map[string]string{v1.AnnotationLoadBalancerIP: "127.0.10.5"} })
	if err := tenantEnv.Client.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	var lb *v1.LoadBalancer
	eventually(t, "management LoadBalancer", func() (err error) { lb, err = getLB(ns, "taken"); return err })
	if lb.Spec.LoadBalancerIP != "127.0.10.5" {
		t.Fatalf("requested IP not passed on: %q", lb.Spec.LoadBalancerIP)
	}
	lb.Status.Conditions = []metav1.Condition{{Type: v1.ConditionAccepted, Status: metav1.ConditionFalse, Reason: v1.ReasonAddressInUse,
		Message: "requested address 127.0.10.5 is already in use", ObservedGeneration: lb.Generation, LastTransitionTime: metav1.Now()}}
	if err := mgmtEnv.Client.Status().Update(ctx, lb); err != nil {
		t.Fatal(err)
	}
	eventually(t, "warning event on the Service", func() error {
		var evs eventsv1.EventList
		if err := tenantEnv.Client.List(ctx, &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Regarding.Name == "taken" && e.Type == corev1.EventTypeWarning && e.Reason == v1.ReasonAddressInUse && strings.Contains(e.Note, "already in use") {
				return nil
			}
		}
		return errors.New("no AddressInUse event")
	})
}

// A refusal is told once per change of reason or message, not on every
// reconcile: a new generation refused for the same reason adds no event.
func TestRefusalIsToldOncePerChange(t *testing.T) {
	ctx := context.Background()
	ns := testNamespace(t)
	if err := tenantEnv.Client.Create(ctx, lbService(ns, "limited", nil)); err != nil {
		t.Fatal(err)
	}
	// refuse sets the management object's verdict for its current
	// generation, with an address the ccm copies (so the test sees that the
	// ccm has read it).
	refuse := func(msg, ip string) {
		t.Helper()
		var lb *v1.LoadBalancer
		eventually(t, "management LoadBalancer", func() (err error) { lb, err = getLB(ns, "limited"); return err })
		lb.Status.Addresses = []v1.Address{{IP: v1.IPAddress(ip), IPMode: v1.IPModeProxy}}
		lb.Status.Conditions = []metav1.Condition{{Type: v1.ConditionAccepted, Status: metav1.ConditionFalse, Reason: v1.ReasonLimitExceeded,
			Message: msg, ObservedGeneration: lb.Generation, LastTransitionTime: metav1.Now()}}
		if err := mgmtEnv.Client.Status().Update(ctx, lb); err != nil {
			t.Fatal(err)
		}
		eventually(t, "address "+ip+" copied", func() error {
			var svc corev1.Service
			if err := tenantEnv.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "limited"}, &svc); err != nil {
				return err
			}
			if in := svc.Status.LoadBalancer.Ingress; len(in) != 1 || in[0].IP != ip {
				return fmt.Errorf("ingress %+v", in)
			}
			return nil
		})
	}
	const msg = "over the tenant's limit maxLoadBalancers=1: this is load balancer number 2 (oldest first)"
	refuse(msg, "127.0.10.21")
	if n := told.count(ns, "limited", v1.ReasonLimitExceeded); n != 1 {
		t.Fatalf("%d LimitExceeded events, want 1", n)
	}
	// A spec change (new generation), refused again for the same reason.
	var svc corev1.Service
	if err := tenantEnv.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "limited"}, &svc); err != nil {
		t.Fatal(err)
	}
	svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	if err := tenantEnv.Client.Update(ctx, &svc); err != nil {
		t.Fatal(err)
	}
	eventually(t, "spec change passed on", func() error {
		lb, err := getLB(ns, "limited")
		if err != nil {
			return err
		}
		if lb.Spec.SessionAffinity != v1.SessionAffinityClientIP {
			return errors.New("session affinity not passed on")
		}
		return nil
	})
	refuse(msg, "127.0.10.22")
	if n := told.count(ns, "limited", v1.ReasonLimitExceeded); n != 1 {
		t.Fatalf("%d LimitExceeded events after an unchanged refusal, want 1", n)
	}
	refuse("over the tenant's limit maxAddresses=1: older load balancers hold 1 addresses", "127.0.10.23")
	if n := told.count(ns, "limited", v1.ReasonLimitExceeded); n != 2 {
		t.Fatalf("%d LimitExceeded events after a new refusal, want 2", n)
	}
}

func TestOtherClassesAreLeftAlone(t *testing.T) {
	ctx := context.Background()
	ns := testNamespace(t)
	other := lbService(ns, "other", func(s *corev1.Service) { s.Spec.LoadBalancerClass = ptr.To("example.com/other") })
	unclassed := lbService(ns, "unclassed", func(s *corev1.Service) { s.Spec.LoadBalancerClass = nil })
	marker := lbService(ns, "marker", nil) // ours: proves the controller ran after the others
	for _, s := range []*corev1.Service{other, unclassed, marker} {
		if err := tenantEnv.Client.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "marker", func() error { _, err := getLB(ns, "marker"); return err })
	for _, s := range []*corev1.Service{other, unclassed} {
		if _, err := getLB(ns, s.Name); !apierrors.IsNotFound(err) {
			t.Errorf("%s: management object exists or error %v", s.Name, err)
		}
		if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(s), s); err != nil || servicehelper.HasLBFinalizer(s) {
			t.Errorf("%s got our finalizer (%v)", s.Name, err)
		}
	}
}

func TestDeletionWaitsForTheManagementObject(t *testing.T) {
	ctx := context.Background()
	ns := testNamespace(t)
	svc := lbService(ns, "gone", nil)
	if err := tenantEnv.Client.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	var lb *v1.LoadBalancer
	eventually(t, "management LoadBalancer", func() (err error) { lb, err = getLB(ns, "gone"); return err })
	// The manager holds the object until it released the address.
	lb.Finalizers = []string{"fleetlb.io/test-release"}
	if err := mgmtEnv.Client.Update(ctx, lb); err != nil {
		t.Fatal(err)
	}
	if err := tenantEnv.Client.Delete(ctx, svc); err != nil {
		t.Fatal(err)
	}
	eventually(t, "management deletion requested", func() error {
		lb, err := getLB(ns, "gone")
		if err != nil {
			return err
		}
		if lb.DeletionTimestamp.IsZero() {
			return errors.New("not deleting")
		}
		return nil
	})
	if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil || !servicehelper.HasLBFinalizer(svc) {
		t.Fatalf("Service released before the load balancer was gone: %v", err)
	}
	lb, _ = getLB(ns, "gone")
	lb.Finalizers = nil
	if err := mgmtEnv.Client.Update(ctx, lb); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Service gone", func() error {
		err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(svc), &corev1.Service{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there: %v", err)
	})
}

func TestTypeChangeCleansUp(t *testing.T) {
	ctx := context.Background()
	ns := testNamespace(t)
	svc := lbService(ns, "retyped", nil)
	if err := tenantEnv.Client.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	eventually(t, "management LoadBalancer", func() error { _, err := getLB(ns, "retyped"); return err })
	eventually(t, "retype", func() error {
		if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
			return err
		}
		svc.Spec.Type = corev1.ServiceTypeClusterIP
		svc.Spec.LoadBalancerClass = nil
		for i := range svc.Spec.Ports {
			svc.Spec.Ports[i].NodePort = 0
		}
		return tenantEnv.Client.Update(ctx, svc)
	})
	eventually(t, "cleanup after type change", func() error {
		if _, err := getLB(ns, "retyped"); !apierrors.IsNotFound(err) {
			return fmt.Errorf("management object still there: %v", err)
		}
		if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
			return err
		}
		if servicehelper.HasLBFinalizer(svc) {
			return errors.New("finalizer still there")
		}
		return nil
	})
}

func TestBadAnnotationIsReported(t *testing.T) {
	ctx := context.Background()
	ns := testNamespace(t)
	svc := lbService(ns, "badpp", func(s *corev1.Service) { s.Annotations = map[string]string{v1.AnnotationProxyProtocol: "v3"} })
	if err := tenantEnv.Client.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	eventually(t, "InvalidService event", func() error {
		var evs eventsv1.EventList
		if err := tenantEnv.Client.List(ctx, &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Regarding.Name == "badpp" && e.Reason == "InvalidService" && strings.Contains(e.Note, `"v3" is not v1 or v2`) {
				return nil
			}
		}
		return errors.New("no InvalidService event")
	})
	if _, err := getLB(ns, "badpp"); !apierrors.IsNotFound(err) {
		t.Fatalf("a Service with a bad annotation got a load balancer: %v", err)
	}
}
