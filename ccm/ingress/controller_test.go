package ingress

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/ccm/secrets"
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
	ctrl.SetLogger(logr.Discard())
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

// startCCM wires the controllers as the binary does: a manager on the tenant
// cluster plus a cache of the tenant's management namespace.
func startCCM() (func(), error) {
	ctx, cancel := context.WithCancel(context.Background())
	mgr, err := ctrl.NewManager(tenantEnv.Config, ctrl.Options{Scheme: tenantEnv.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}})
	if err != nil {
		cancel()
		return nil, err
	}
	mgmt, err := cluster.New(mgmtEnv.Config, func(o *cluster.Options) {
		o.Scheme = mgmtEnv.Scheme
		o.Cache.DefaultNamespaces = map[string]cache.Config{mgmtNS: {}}
	})
	if err != nil {
		cancel()
		return nil, err
	}
	if err := mgr.Add(mgmt); err != nil {
		cancel()
		return nil, err
	}
	rec := mgr.GetEventRecorder("fleetlb-ccm")
	if err := (&Reconciler{Tenant: mgr.GetClient(), Mgmt: mgmt.GetClient(), Namespace: mgmtNS, ClusterName: "cluster-a", Recorder: rec}).
		SetupWithManager(ctx, mgr, mgmt); err != nil {
		cancel()
		return nil, err
	}
	if err := (&CompanionReconciler{Tenant: mgr.GetClient(), Recorder: rec}).SetupWithManager(ctx, mgr); err != nil {
		cancel()
		return nil, err
	}
	if err := (&CompanionSlicesReconciler{Tenant: mgr.GetClient()}).SetupWithManager(mgr); err != nil {
		cancel()
		return nil, err
	}
	if err := (&secrets.Reconciler{Tenant: mgr.GetAPIReader(), Mgmt: mgmt.GetClient(), Namespace: mgmtNS, Recorder: rec}).
		SetupWithManager(ctx, mgr, mgmt, SecretReferrer("")); err != nil {
		cancel()
		return nil, err
	}
	if err := mgr.Add(EnsureClass(mgr.GetClient(), "")); err != nil {
		cancel()
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "manager:", err)
		}
		close(done)
	}()
	return func() { cancel(); <-done }, nil
}

func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	testenv.Eventually(t, what, f)
}

var seq atomic.Int32

// testNamespace gives each test (and each -count repetition) its own tenant namespace.
func testNamespace(t *testing.T) string {
	t.Helper()
	ns := fmt.Sprintf("i%d", seq.Add(1))
	if err := tenantEnv.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	return ns
}

func create(t *testing.T, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := tenantEnv.Client.Create(context.Background(), o); err != nil {
			t.Fatal(err)
		}
	}
}

func clusterIPService(ns, name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP},
				{Name: "h2c", Port: 81, TargetPort: intstr.FromString("h2c"), Protocol: corev1.ProtocolTCP, AppProtocol: ptr.To("kubernetes.io/h2c")},
			},
		},
	}
}

func nodePortService(ns, name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeNodePort,
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 8080, Protocol: corev1.ProtocolTCP}},
		},
	}
}

func tlsSecret(ns, name, cert string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: []byte(cert), corev1.TLSPrivateKeyKey: []byte("key-" + cert), "extra": []byte("not copied")},
	}
}

func backend(svc string, port any) networkingv1.IngressBackend {
	b := networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: svc}}
	switch p := port.(type) {
	case int:
		b.Service.Port.Number = int32(p)
	case string:
		b.Service.Port.Name = p
	}
	return b
}

func path(p string, pt networkingv1.PathType, b networkingv1.IngressBackend) networkingv1.HTTPIngressPath {
	return networkingv1.HTTPIngressPath{Path: p, PathType: ptr.To(pt), Backend: b}
}

func rule(host string, paths ...networkingv1.HTTPIngressPath) networkingv1.IngressRule {
	return networkingv1.IngressRule{Host: host, IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: paths}}}
}

func getRoute(name string) (*v1.Route, error) {
	var rt v1.Route
	err := mgmtEnv.Client.Get(context.Background(), client.ObjectKey{Namespace: mgmtNS, Name: name}, &rt)
	return &rt, err
}

func getCopy(ns, name string) (*corev1.Secret, error) {
	var s corev1.Secret
	err := mgmtEnv.Client.Get(context.Background(), client.ObjectKey{Namespace: mgmtNS, Name: secrets.CopyName(ns, name)}, &s)
	return &s, err
}

func gone(get func() error) func() error {
	return func() error {
		if err := get(); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	}
}

func findEvent(ns, regarding, typ, reason, noteContains string) func() error {
	return func() error {
		var evs eventsv1.EventList
		if err := tenantEnv.Client.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		var seen []string
		for _, e := range evs.Items {
			if e.Regarding.Name == regarding && e.Type == typ && e.Reason == reason && strings.Contains(e.Note, noteContains) {
				return nil
			}
			seen = append(seen, e.Reason+": "+e.Note)
		}
		return fmt.Errorf("no %s event %s %q on %s; have %q", typ, reason, noteContains, regarding, seen)
	}
}

func TestIngressClassIsCreated(t *testing.T) {
	eventually(t, "IngressClass fleetlb", func() error {
		var ic networkingv1.IngressClass
		if err := tenantEnv.Client.Get(context.Background(), client.ObjectKey{Name: DefaultClass}, &ic); err != nil {
			return err
		}
		if ic.Spec.Controller != ControllerName {
			return fmt.Errorf("controller %q", ic.Spec.Controller)
		}
		return nil
	})
}

// The whole life of an Ingress with TLS and a ClusterIP backend.
func TestIngressWithTLSAndClusterIPBackend(t *testing.T) {
	ctx := context.Background()
	ns := testNamespace(t)
	web, api := clusterIPService(ns, "web"), nodePortService(ns, "api")
	ing := &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shop", Annotations: map[string]string{annotationClusterIssuer: "letsencrypt"}},
		Spec: networkingv1.IngressSpec{
			IngressClassName: ptr.To(DefaultClass),
			TLS:              []networkingv1.IngressTLS{{Hosts: []string{"shop.example.com"}, SecretName: "shop-cert"}},
			Rules: []networkingv1.IngressRule{rule("shop.example.com",
				path("/", networkingv1.PathTypePrefix, backend("web", "http")),
				path("/api/v1", networkingv1.PathTypeExact, backend("api", 8080)),
				path("/grpc", networkingv1.PathTypeImplementationSpecific, backend("web", 81)),
			)},
		},
	}
	create(t, web, api, tlsSecret(ns, "shop-cert", "cert-1"), tlsSecret(ns, "unrelated", "x"), ing)

	var rt *v1.Route
	eventually(t, "management Route with every path", func() (err error) {
		if rt, err = getRoute(RouteName(ns, "shop")); err == nil && len(rt.Spec.Rules) != 3 {
			err = fmt.Errorf("%d rules", len(rt.Spec.Rules))
		}
		return err
	})
	if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(ing), ing); err != nil {
		t.Fatal(err)
	}
	if !controllerutil.ContainsFinalizer(ing, Finalizer) {
		t.Fatal("Ingress has no finalizer")
	}
	if rt.Name != "ingress."+ns+".shop" {
		t.Errorf("route name %q", rt.Name)
	}
	if rt.Labels[LabelSourceKind] != "Ingress" || rt.Labels[LabelSourceNamespace] != ns {
		t.Errorf("labels %v", rt.Labels)
	}
	wantSource := v1.RouteSource{Kind: v1.SourceIngress, Cluster: "cluster-a", Namespace: ns, Name: "shop", UID: string(ing.UID), Generation: ing.Generation}
	if rt.Spec.Source != wantSource {
		t.Errorf("source %+v, want %+v", rt.Spec.Source, wantSource)
	}
	if !slices.Equal(rt.Spec.Hostnames, []v1.Hostname{"shop.example.com"}) {
		t.Errorf("hostnames %v", rt.Spec.Hostnames)
	}
	wantTLS := []v1.RouteTLS{{Hostnames: []v1.Hostname{"shop.example.com"}, SecretName: ns + ".shop-cert", Issuer: &v1.IssuerRef{Kind: "ClusterIssuer", Name: "letsencrypt"},
		RedirectHTTP: true}} // plain HTTP redirects to https by default
	if !equality.Semantic.DeepEqual(rt.Spec.TLS, wantTLS) {
		t.Errorf("tls %+v", rt.Spec.TLS)
	}

	// The companion exposes the ClusterIP Service on node ports, owned by it.
	var companion corev1.Service
	if err := tenantEnv.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web-fleetlb"}, &companion); err != nil {
		t.Fatal(err)
	}
	if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(web), web); err != nil {
		t.Fatal(err)
	}
	if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(api), api); err != nil {
		t.Fatal(err)
	}
	if companion.Spec.Type != corev1.ServiceTypeNodePort || companion.Labels[LabelCompanionOf] != "web" ||
		!equality.Semantic.DeepEqual(companion.Spec.Selector, web.Spec.Selector) {
		t.Errorf("companion %+v %+v", companion.Labels, companion.Spec)
	}
	if or := companion.OwnerReferences; len(or) != 1 || or[0].Kind != "Service" || or[0].Name != "web" || or[0].UID != web.UID {
		t.Errorf("companion owner references %+v", or)
	}
	if len(companion.Spec.Ports) != 2 || companion.Spec.Ports[0].Port != 80 || companion.Spec.Ports[0].TargetPort != intstr.FromInt32(8080) ||
		companion.Spec.Ports[1].TargetPort != intstr.FromString("h2c") || companion.Spec.Ports[0].NodePort == 0 {
		t.Errorf("companion ports %+v", companion.Spec.Ports)
	}

	// Rules: Ingress precedence (longest first, Exact before Prefix), node ports
	// of the NodePort Service and of the companion, protocol from appProtocol.
	wantRules := []v1.RouteRule{
		{Matches: []v1.RouteMatch{{Path: &v1.PathMatch{Type: v1.PathExact, Value: "/api/v1"}}},
			Backends: []v1.RouteBackend{{ServiceName: "api", ServicePort: ptrPort(8080), NodePort: v1.PortNumber(api.Spec.Ports[0].NodePort), Weight: ptr.To[int32](1), Protocol: v1.BackendHTTP}}},
		{Matches: []v1.RouteMatch{{Path: &v1.PathMatch{Type: v1.PathPrefix, Value: "/grpc"}}},
			Backends: []v1.RouteBackend{{ServiceName: "web", ServicePort: ptrPort(81), NodePort: v1.PortNumber(companion.Spec.Ports[1].NodePort), Weight: ptr.To[int32](1), Protocol: v1.BackendHTTP2}}},
		{Matches: []v1.RouteMatch{{Path: &v1.PathMatch{Type: v1.PathPrefix, Value: "/"}}},
			Backends: []v1.RouteBackend{{ServiceName: "web", ServicePort: ptrPort(80), NodePort: v1.PortNumber(companion.Spec.Ports[0].NodePort), Weight: ptr.To[int32](1), Protocol: v1.BackendHTTP}}},
	}
	if !equality.Semantic.DeepEqual(rt.Spec.Rules, wantRules) {
		t.Errorf("rules\n got %+v\nwant %+v", rt.Spec.Rules, wantRules)
	}

	// Only the referenced Secret is copied: certificate and key, typed TLS.
	var cp *corev1.Secret
	eventually(t, "Secret copy", func() (err error) { cp, err = getCopy(ns, "shop-cert"); return err })
	if cp.Type != corev1.SecretTypeTLS || string(cp.Data[corev1.TLSCertKey]) != "cert-1" || string(cp.Data[corev1.TLSPrivateKeyKey]) != "key-cert-1" || len(cp.Data) != 2 {
		t.Errorf("copy %s %v", cp.Type, cp.Data)
	}
	if cp.Labels[secrets.LabelCopyOfNamespace] != ns || cp.Labels[secrets.LabelCopyOfName] != "shop-cert" {
		t.Errorf("copy labels %v", cp.Labels)
	}
	if _, err := getCopy(ns, "unrelated"); !apierrors.IsNotFound(err) {
		t.Errorf("an unreferenced Secret was copied (%v)", err)
	}

	// The source changes: the copy follows.
	src := tlsSecret(ns, "shop-cert", "cert-2")
	if err := tenantEnv.Client.Update(ctx, src); err != nil {
		t.Fatal(err)
	}
	eventually(t, "copy updated", func() error {
		cp, err := getCopy(ns, "shop-cert")
		if err != nil || string(cp.Data[corev1.TLSCertKey]) != "cert-2" {
			return fmt.Errorf("%v %q", err, cp.Data[corev1.TLSCertKey])
		}
		return nil
	})

	// The fleet reports an address and its ports (not 80 and 443): they are on the Ingress.
	rt, _ = getRoute(RouteName(ns, "shop"))
	rt.Status.Addresses = []v1.Address{{IP: "127.0.20.1", IPMode: v1.IPModeProxy}}
	rt.Status.Ports = []v1.RoutePort{{Port: 8443, Protocol: v1.RoutePortHTTPS}, {Port: 8080, Protocol: v1.RoutePortHTTP}}
	rt.Status.Conditions = []metav1.Condition{{Type: v1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: v1.ReasonAccepted, ObservedGeneration: rt.Generation, LastTransitionTime: metav1.Now()}}
	if err := mgmtEnv.Client.Status().Update(ctx, rt); err != nil {
		t.Fatal(err)
	}
	eventually(t, "address on the Ingress", func() error {
		if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(ing), ing); err != nil {
			return err
		}
		wantPorts := []networkingv1.IngressPortStatus{{Port: 8080, Protocol: corev1.ProtocolTCP}, {Port: 8443, Protocol: corev1.ProtocolTCP}}
		if lb := ing.Status.LoadBalancer.Ingress; len(lb) != 1 || lb[0].IP != "127.0.20.1" || !equality.Semantic.DeepEqual(lb[0].Ports, wantPorts) {
			return fmt.Errorf("status %+v", ing.Status.LoadBalancer)
		}
		return nil
	})
	// That reconcile found nothing to change: neither the Route nor the companion was rewritten.
	if now, err := getRoute(RouteName(ns, "shop")); err != nil || now.ResourceVersion != rt.ResourceVersion {
		t.Errorf("route rewritten without a change: %v %s → %s", err, rt.ResourceVersion, now.ResourceVersion)
	}
	var companionNow corev1.Service
	if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(&companion), &companionNow); err != nil || companionNow.ResourceVersion != companion.ResourceVersion {
		t.Errorf("companion rewritten without a change: %v", err)
	}

	// TLS removed: the Route loses it and the copy goes.
	ing.Spec.TLS = nil
	if err := tenantEnv.Client.Update(ctx, ing); err != nil {
		t.Fatal(err)
	}
	eventually(t, "copy removed", gone(func() error { _, err := getCopy(ns, "shop-cert"); return err }))
	eventually(t, "route without TLS", func() error {
		rt, err := getRoute(RouteName(ns, "shop"))
		if err != nil || len(rt.Spec.TLS) != 0 || rt.Spec.Source.Generation != ing.Generation {
			return fmt.Errorf("%v tls %+v generation %d", err, rt.Spec.TLS, rt.Spec.Source.Generation)
		}
		return nil
	})

	// Deleted: Route, companion and finalizer go.
	ing.Spec.TLS = []networkingv1.IngressTLS{{SecretName: "shop-cert"}}
	if err := tenantEnv.Client.Update(ctx, ing); err != nil {
		t.Fatal(err)
	}
	eventually(t, "copy back", func() error { _, err := getCopy(ns, "shop-cert"); return err })
	if err := tenantEnv.Client.Delete(ctx, ing); err != nil {
		t.Fatal(err)
	}
	eventually(t, "route removed", gone(func() error { _, err := getRoute(RouteName(ns, "shop")); return err }))
	eventually(t, "Ingress gone (finalizer removed)", gone(func() error {
		return tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(ing), &networkingv1.Ingress{})
	}))
	eventually(t, "companion removed", gone(func() error {
		return tenantEnv.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web-fleetlb"}, &corev1.Service{})
	}))
	eventually(t, "copy removed after delete", gone(func() error { _, err := getCopy(ns, "shop-cert"); return err }))
	// Services that are not ClusterIP never get companions.
	if err := tenantEnv.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "api-fleetlb"}, &corev1.Service{}); !apierrors.IsNotFound(err) {
		t.Errorf("NodePort Service got a companion (%v)", err)
	}
}

// Several hosts with their own paths, host-less paths and a default backend;
// a missing Service is reported and its path dropped while the rest is served.
func TestHostsDefaultBackendAndMissingService(t *testing.T) {
	ctx := context.Background()
	ns := testNamespace(t)
	api := nodePortService(ns, "api")
	ing := &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "multi"},
		Spec: networkingv1.IngressSpec{
			IngressClassName: ptr.To(DefaultClass),
			DefaultBackend:   ptr.To(backend("api", "http")),
			TLS:              []networkingv1.IngressTLS{{Hosts: []string{"*.example.com"}, SecretName: "wild"}},
			Rules: []networkingv1.IngressRule{
				rule("a.example.com", path("/a", networkingv1.PathTypePrefix, backend("api", 8080)), path("/gone", networkingv1.PathTypePrefix, backend("missing", 80))),
				rule("b.example.com", path("/b", networkingv1.PathTypePrefix, backend("api", 8080))),
				rule("c.example.com", path("/a", networkingv1.PathTypePrefix, backend("api", 8080))),
				rule("", path("/common", networkingv1.PathTypeExact, backend("api", 8080))),
			},
		},
	}
	create(t, api, ing)
	eventually(t, "BackendNotFound event", findEvent(ns, "multi", corev1.EventTypeWarning, "InvalidIngress", `Service "missing" not found`))
	var first, second *v1.Route
	eventually(t, "routes", func() (err error) {
		if first, err = getRoute(RouteName(ns, "multi")); err != nil {
			return err
		}
		second, err = getRoute(RouteName(ns, "multi", "b.example.com"))
		return err
	})
	if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(api), api); err != nil {
		t.Fatal(err)
	}
	np := v1.PortNumber(api.Spec.Ports[0].NodePort)
	be := []v1.RouteBackend{{ServiceName: "api", ServicePort: ptrPort(8080), NodePort: np, Weight: ptr.To[int32](1), Protocol: v1.BackendHTTP}}
	prefix := func(p string) []v1.RouteMatch {
		return []v1.RouteMatch{{Path: &v1.PathMatch{Type: v1.PathPrefix, Value: p}}}
	}
	common := v1.RouteRule{Matches: []v1.RouteMatch{{Path: &v1.PathMatch{Type: v1.PathExact, Value: "/common"}}}, Backends: be}
	fallback := v1.RouteRule{Backends: be}
	// a and c have the same paths (the missing one dropped): one Route.
	if !slices.Equal(first.Spec.Hostnames, []v1.Hostname{"a.example.com", "c.example.com"}) {
		t.Errorf("first route hostnames %v", first.Spec.Hostnames)
	}
	if want := []v1.RouteRule{{Matches: prefix("/a"), Backends: be}, common, fallback}; !equality.Semantic.DeepEqual(first.Spec.Rules, want) {
		t.Errorf("first route rules\n got %+v\nwant %+v", first.Spec.Rules, want)
	}
	if !slices.Equal(second.Spec.Hostnames, []v1.Hostname{"b.example.com"}) {
		t.Errorf("second route hostnames %v", second.Spec.Hostnames)
	}
	if want := []v1.RouteRule{{Matches: prefix("/b"), Backends: be}, common, fallback}; !equality.Semantic.DeepEqual(second.Spec.Rules, want) {
		t.Errorf("second route rules\n got %+v\nwant %+v", second.Spec.Rules, want)
	}
	// The wildcard certificate covers each Route's hostnames.
	if len(first.Spec.TLS) != 1 || !slices.Equal(first.Spec.TLS[0].Hostnames, first.Spec.Hostnames) || first.Spec.TLS[0].SecretName != ns+".wild" {
		t.Errorf("first route tls %+v", first.Spec.TLS)
	}

	// The missing Service appears: its path is served, the hosts split differently.
	missing := nodePortService(ns, "missing")
	missing.Spec.Ports[0].Port = 80
	create(t, missing)
	eventually(t, "third route for c", func() error { _, err := getRoute(RouteName(ns, "multi", "c.example.com")); return err })
	eventually(t, "first route is a alone", func() error {
		rt, err := getRoute(RouteName(ns, "multi"))
		if err != nil || !slices.Equal(rt.Spec.Hostnames, []v1.Hostname{"a.example.com"}) || len(rt.Spec.Rules) != 4 {
			return fmt.Errorf("%v %v %d rules", err, rt.Spec.Hostnames, len(rt.Spec.Rules))
		}
		return nil
	})

	// Statuses of all its Routes come back as one address list.
	for i, name := range []string{RouteName(ns, "multi"), RouteName(ns, "multi", "b.example.com")} {
		rt, err := getRoute(name)
		if err != nil {
			t.Fatal(err)
		}
		rt.Status.Addresses = []v1.Address{{IP: v1.IPAddress(fmt.Sprintf("127.0.30.%d", i+1))}}
		if err := mgmtEnv.Client.Status().Update(ctx, rt); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "addresses", func() error {
		if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(ing), ing); err != nil {
			return err
		}
		if lb := ing.Status.LoadBalancer.Ingress; len(lb) != 2 || lb[0].IP != "127.0.30.1" || lb[1].IP != "127.0.30.2" {
			return fmt.Errorf("status %+v", lb)
		}
		return nil
	})
}

// A refusal by the fleet is an event on the Ingress, once per reason.
func TestRouteConditionBecomesEvent(t *testing.T) {
	ctx := context.Background()
	ns := testNamespace(t)
	ing := &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "taken"},
		Spec: networkingv1.IngressSpec{
			IngressClassName: ptr.To(DefaultClass),
			Rules:            []networkingv1.IngressRule{rule("owned.example.com", path("/", networkingv1.PathTypePrefix, backend("api", 8080)))},
		},
	}
	create(t, nodePortService(ns, "api"), ing)
	var rt *v1.Route
	eventually(t, "route", func() (err error) { rt, err = getRoute(RouteName(ns, "taken")); return err })
	rt.Status.Conditions = []metav1.Condition{{Type: v1.ConditionAccepted, Status: metav1.ConditionFalse, Reason: v1.ReasonHostnameConflict,
		Message: "owned.example.com is served by tenant-b", ObservedGeneration: rt.Generation, LastTransitionTime: metav1.Now()}}
	if err := mgmtEnv.Client.Status().Update(ctx, rt); err != nil {
		t.Fatal(err)
	}
	eventually(t, "HostnameConflict event", findEvent(ns, "taken", corev1.EventTypeWarning, v1.ReasonHostnameConflict, "served by tenant-b"))
}

func TestOtherClassesAreIgnoredAndLegacyAnnotationServed(t *testing.T) {
	ctx := context.Background()
	ns := testNamespace(t)
	mk := func(name string, class *string, ann map[string]string) *networkingv1.Ingress {
		return &networkingv1.Ingress{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: ann},
			Spec: networkingv1.IngressSpec{
				IngressClassName: class,
				Rules:            []networkingv1.IngressRule{rule(name+".example.com", path("/", networkingv1.PathTypePrefix, backend("web", 80)))},
				TLS:              []networkingv1.IngressTLS{{SecretName: name + "-cert"}},
			},
		}
	}
	other := mk("other", ptr.To("nginx"), nil)
	otherLegacy := mk("other-legacy", nil, map[string]string{AnnotationLegacyClass: "nginx"})
	legacy := mk("legacy", nil, map[string]string{AnnotationLegacyClass: DefaultClass})
	create(t, clusterIPService(ns, "web"), tlsSecret(ns, "other-cert", "o"), tlsSecret(ns, "legacy-cert", "l"), other, otherLegacy, legacy)
	eventually(t, "legacy Ingress served", func() error { _, err := getRoute(RouteName(ns, "legacy")); return err })
	eventually(t, "legacy Secret copied", func() error { _, err := getCopy(ns, "legacy-cert"); return err })
	for _, ing := range []*networkingv1.Ingress{other, otherLegacy} {
		if _, err := getRoute(RouteName(ns, ing.Name)); !apierrors.IsNotFound(err) {
			t.Errorf("%s: route exists or error %v", ing.Name, err)
		}
		if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(ing), ing); err != nil || controllerutil.ContainsFinalizer(ing, Finalizer) {
			t.Errorf("%s got our finalizer (%v)", ing.Name, err)
		}
	}
	if _, err := getCopy(ns, "other-cert"); !apierrors.IsNotFound(err) {
		t.Errorf("Secret of another class's Ingress copied (%v)", err)
	}

	// Moving the served Ingress to another class cleans up after it.
	eventually(t, "reclass", func() error {
		if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(legacy), legacy); err != nil {
			return err
		}
		legacy.Annotations[AnnotationLegacyClass] = "nginx"
		return tenantEnv.Client.Update(ctx, legacy)
	})
	eventually(t, "route removed after reclass", gone(func() error { _, err := getRoute(RouteName(ns, "legacy")); return err }))
	eventually(t, "copy removed after reclass", gone(func() error { _, err := getCopy(ns, "legacy-cert"); return err }))
	eventually(t, "finalizer removed after reclass", func() error {
		if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(legacy), legacy); err != nil {
			return err
		}
		if controllerutil.ContainsFinalizer(legacy, Finalizer) {
			return errors.New("finalizer still there")
		}
		return nil
	})
}

// A referenced Secret without a certificate is not copied (an event says
// why); a copy goes when its source is deleted.
func TestSecretNotTLSAndSourceDeleted(t *testing.T) {
	ctx := context.Background()
	ns := testNamespace(t)
	opaque := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "opaque"}, Data: map[string][]byte{"password": []byte("x")}}
	good := tlsSecret(ns, "good", "c")
	ing := &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "certs"},
		Spec: networkingv1.IngressSpec{
			IngressClassName: ptr.To(DefaultClass),
			TLS:              []networkingv1.IngressTLS{{Hosts: []string{"a.example.com"}, SecretName: "opaque"}, {Hosts: []string{"b.example.com"}, SecretName: "good"}},
			Rules:            []networkingv1.IngressRule{rule("a.example.com", path("/", networkingv1.PathTypePrefix, backend("api", 8080))), rule("b.example.com", path("/", networkingv1.PathTypePrefix, backend("api", 8080)))},
		},
	}
	create(t, nodePortService(ns, "api"), opaque, good, ing)
	eventually(t, "SecretNotTLS event", findEvent(ns, "opaque", corev1.EventTypeWarning, "SecretNotTLS", "not copied"))
	eventually(t, "good copy", func() error { _, err := getCopy(ns, "good"); return err })
	if _, err := getCopy(ns, "opaque"); !apierrors.IsNotFound(err) {
		t.Errorf("a Secret without a certificate was copied (%v)", err)
	}
	if err := tenantEnv.Client.Delete(ctx, good); err != nil {
		t.Fatal(err)
	}
	eventually(t, "copy of a deleted Secret removed", gone(func() error { _, err := getCopy(ns, "good"); return err }))
}
