package gateway

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/ccm/ingress"
	"github.com/fleetlb/fleetlb/ccm/secrets"
	"github.com/fleetlb/fleetlb/internal/testcerts"
	"github.com/fleetlb/fleetlb/internal/testenv"
)

var tenantEnv, mgmtEnv *testenv.Env

const mgmtNS = "tenant-a"

// gatewayCRDs is the standard channel of the gateway-api module in go.mod.
func gatewayCRDs() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api").Output()
	if err != nil {
		return "", fmt.Errorf("locating sigs.k8s.io/gateway-api: %w", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "config", "crd", "standard"), nil
}

func TestMain(m *testing.M) {
	dir, err := gatewayCRDs()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if tenantEnv, err = testenv.New(testenv.Options{NoCRDs: true, ExtraCRDDirs: []string{dir}}); err != nil {
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
	if err := gwv1.Install(tenantEnv.Scheme); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
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

// startCCM wires the controllers as the binary does.
func startCCM() (func(), error) {
	ctx, cancel := context.WithCancel(context.Background())
	fail := func(err error) (func(), error) { cancel(); return nil, err }
	mgr, err := ctrl.NewManager(tenantEnv.Config, ctrl.Options{Scheme: tenantEnv.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}})
	if err != nil {
		return fail(err)
	}
	mgmt, err := cluster.New(mgmtEnv.Config, func(o *cluster.Options) {
		o.Scheme = mgmtEnv.Scheme
		o.Cache.DefaultNamespaces = map[string]cache.Config{mgmtNS: {}}
	})
	if err != nil {
		return fail(err)
	}
	if err := mgr.Add(mgmt); err != nil {
		return fail(err)
	}
	if ok, err := Installed(mgr); err != nil || !ok {
		return fail(fmt.Errorf("gateway API not seen as installed: %v", err))
	}
	rec := mgr.GetEventRecorder("fleetlb-ccm")
	c := &Controllers{Tenant: mgr.GetClient(), Mgmt: mgmt.GetClient(), Namespace: mgmtNS, ClusterName: "cluster-a", Recorder: rec}
	if err := c.SetupWithManager(ctx, mgr, mgmt); err != nil {
		return fail(err)
	}
	if err := testenv.ReleaseAddresses(mgr, mgmt); err != nil {
		return fail(err)
	}
	// The Ingress controller owns the Ingress backend index the companion controller reads.
	if err := (&ingress.Reconciler{Tenant: mgr.GetClient(), Mgmt: mgmt.GetClient(), Namespace: mgmtNS, ClusterName: "cluster-a", Recorder: rec}).
		SetupWithManager(ctx, mgr, mgmt); err != nil {
		return fail(err)
	}
	if err := (&ingress.CompanionReconciler{Tenant: mgr.GetClient(), Recorder: rec, Referrers: ServiceReferrers()}).SetupWithManager(ctx, mgr); err != nil {
		return fail(err)
	}
	if err := (&secrets.Reconciler{Tenant: mgr.GetAPIReader(), Mgmt: mgmt.GetClient(), Namespace: mgmtNS, Recorder: rec}).
		SetupWithManager(ctx, mgr, mgmt, ingress.SecretReferrer(""), c.SecretReferrer(mgr.GetClient())); err != nil {
		return fail(err)
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

func testNamespace(t *testing.T) string {
	t.Helper()
	ns := fmt.Sprintf("g%d", seq.Add(1))
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

func service(ns, name string, typ corev1.ServiceType, port int32) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Type: typ, Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{{Name: "p", Port: port, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}},
	}
}

func gatewayOf(ns, name, class string, listeners ...gwv1.Listener) *gwv1.Gateway {
	return &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: gwv1.GatewaySpec{GatewayClassName: gwv1.ObjectName(class), Listeners: listeners}}
}

func backendRef(ns *string, name string, port int32, weight int32) gwv1.HTTPBackendRef {
	return gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{
		Name: gwv1.ObjectName(name), Namespace: (*gwv1.Namespace)(ns), Port: ptr.To(gwv1.PortNumber(port))}, Weight: ptr.To(weight)}}
}

func pathMatch(t gwv1.PathMatchType, v string) gwv1.HTTPRouteMatch {
	return gwv1.HTTPRouteMatch{Path: &gwv1.HTTPPathMatch{Type: ptr.To(t), Value: ptr.To(v)}}
}

func getRoute(name string) (*v1.Route, error) {
	var rt v1.Route
	err := mgmtEnv.Client.Get(context.Background(), client.ObjectKey{Namespace: mgmtNS, Name: name}, &rt)
	return &rt, err
}

func gone(get func() error) func() error {
	return func() error {
		if err := get(); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	}
}

// parentCondition returns our parent status condition of a route.
func parentCondition(st gwv1.RouteStatus, gw string, t gwv1.RouteConditionType) *metav1.Condition {
	for _, p := range st.Parents {
		if p.ControllerName == ControllerName && string(p.ParentRef.Name) == gw {
			return meta.FindStatusCondition(p.Conditions, string(t))
		}
	}
	return nil
}

func wantCondition(c *metav1.Condition, status metav1.ConditionStatus, reason string, gen int64) error {
	if c == nil {
		return errors.New("no condition")
	}
	if c.Status != status || c.Reason != reason || c.ObservedGeneration != gen {
		return fmt.Errorf("condition %s=%s reason %s gen %d (%s), want %s %s gen %d", c.Type, c.Status, c.Reason, c.ObservedGeneration, c.Message, status, reason, gen)
	}
	return nil
}

// serveGateway plays the manager for a Gateway's LoadBalancer: admitted with
// addr and Programmed.
func serveGateway(t *testing.T, lb *v1.LoadBalancer, addr v1.IPAddress) {
	t.Helper()
	ctx := context.Background()
	if err := mgmtEnv.Client.Get(ctx, client.ObjectKeyFromObject(lb), lb); err != nil {
		t.Fatal(err)
	}
	lb.Status.ObservedGeneration = lb.Generation
	lb.Status.Addresses = []v1.Address{{IP: addr, IPMode: v1.IPModeProxy}}
	lb.Status.Conditions = []metav1.Condition{
		{Type: v1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: v1.ReasonAccepted, ObservedGeneration: lb.Generation, LastTransitionTime: metav1.Now()},
		{Type: v1.ConditionProgrammed, Status: metav1.ConditionTrue, Reason: v1.ReasonProgrammed, ObservedGeneration: lb.Generation, LastTransitionTime: metav1.Now()},
	}
	if err := mgmtEnv.Client.Status().Update(ctx, lb); err != nil {
		t.Fatal(err)
	}
}

func TestGatewayClassIsCreatedAndAccepted(t *testing.T) {
	eventually(t, "GatewayClass accepted", func() error {
		var gc gwv1.GatewayClass
		if err := tenantEnv.Client.Get(context.Background(), client.ObjectKey{Name: DefaultClass}, &gc); err != nil {
			return err
		}
		if gc.Spec.ControllerName != ControllerName {
			return fmt.Errorf("controller %q", gc.Spec.ControllerName)
		}
		return wantCondition(meta.FindStatusCondition(gc.Status.Conditions, string(gwv1.GatewayClassConditionStatusAccepted)), metav1.ConditionTrue, "Accepted", gc.Generation)
	})
}

// An HTTPRoute on an HTTP and an HTTPS listener: hostnames intersected,
// matches ranked, filters and weights mapped, TLS from the listener, a
// missing backend reported while the rest is served; status both ways; cleanup.
func TestHTTPRouteThroughGateway(t *testing.T) {
	ctx := context.Background()
	ns := testNamespace(t)
	web, api := service(ns, "web", corev1.ServiceTypeClusterIP, 80), service(ns, "api", corev1.ServiceTypeNodePort, 8080)
	cert := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cert"}, Type: corev1.SecretTypeTLS,
		Data: tlsData(t, "www.example.com")}
	gw := gatewayOf(ns, "gw", DefaultClass,
		gwv1.Listener{Name: "http", Protocol: gwv1.HTTPProtocolType, Port: 80, Hostname: ptr.To(gwv1.Hostname("*.example.com"))},
		gwv1.Listener{Name: "https", Protocol: gwv1.HTTPSProtocolType, Port: 443, Hostname: ptr.To(gwv1.Hostname("*.example.com")),
			TLS: &gwv1.ListenerTLSConfig{CertificateRefs: []gwv1.SecretObjectReference{{Name: "cert"}}}})
	hr := &gwv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shop"},
		Spec: gwv1.HTTPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "gw"}}},
			Hostnames:       []gwv1.Hostname{"shop.example.com", "shop.other.org"},
			Rules: []gwv1.HTTPRouteRule{
				{
					Matches:     []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: ptr.To(gwv1.PathMatchPathPrefix), Value: ptr.To("/api")}, Headers: []gwv1.HTTPHeaderMatch{{Name: "x-env", Value: "canary"}}}},
					BackendRefs: []gwv1.HTTPBackendRef{backendRef(nil, "api", 8080, 1), backendRef(nil, "web", 80, 3)},
				},
				{
					Matches: []gwv1.HTTPRouteMatch{pathMatch(gwv1.PathMatchExact, "/old")},
					Filters: []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterRequestRedirect, RequestRedirect: &gwv1.HTTPRequestRedirectFilter{Scheme: ptr.To("https"), StatusCode: ptr.To(301)}}},
				},
				{
					Matches: []gwv1.HTTPRouteMatch{pathMatch(gwv1.PathMatchPathPrefix, "/v2")},
					Filters: []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterURLRewrite, URLRewrite: &gwv1.HTTPURLRewriteFilter{
						Path: &gwv1.HTTPPathModifier{Type: gwv1.PrefixMatchHTTPPathModifier, ReplacePrefixMatch: ptr.To("/")}}}},
					BackendRefs: []gwv1.HTTPBackendRef{backendRef(nil, "web", 80, 1)},
				},
				{
					Matches:     []gwv1.HTTPRouteMatch{pathMatch(gwv1.PathMatchPathPrefix, "/missing")},
					BackendRefs: []gwv1.HTTPBackendRef{backendRef(nil, "nothere", 80, 1)},
				},
			},
		},
	}
	create(t, web, api, cert, gw, hr)

	name := RouteName("httproute", ns, "shop")
	var rt *v1.Route
	eventually(t, "management Route", func() (err error) { rt, err = getRoute(name); return err })
	for _, o := range []client.Object{hr, web, api} {
		if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(o), o); err != nil {
			t.Fatal(err)
		}
	}
	if len(hr.Finalizers) != 0 {
		t.Errorf("HTTPRoute finalizers %v: a deleted route must go at once", hr.Finalizers)
	}
	var companion corev1.Service
	if err := tenantEnv.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web-fleetlb"}, &companion); err != nil {
		t.Fatalf("companion: %v", err)
	}
	if rt.Spec.Source != (v1.RouteSource{Kind: v1.SourceHTTPRoute, Cluster: "cluster-a", Namespace: ns, Name: "shop", UID: string(hr.UID), Generation: hr.Generation}) {
		t.Errorf("source %+v", rt.Spec.Source)
	}
	if rt.Annotations[AnnotationGateways] != ns+"/gw" {
		t.Errorf("gateways annotation %q", rt.Annotations[AnnotationGateways])
	}
	// The route's own hostnames: the manager intersects them with each listener's.
	if !slices.Equal(rt.Spec.Hostnames, []v1.Hostname{"shop.example.com", "shop.other.org"}) || len(rt.Spec.TLS) != 0 {
		t.Errorf("hostnames %v tls %+v", rt.Spec.Hostnames, rt.Spec.TLS)
	}
	if want := []v1.RouteParent{{LoadBalancer: GatewayLoadBalancerName(ns, "gw"), Listeners: []string{"http", "https"}}}; !equality.Semantic.DeepEqual(rt.Spec.Parents, want) {
		t.Errorf("parents %+v, want %+v", rt.Spec.Parents, want)
	}
	var gwLB v1.LoadBalancer
	if err := mgmtEnv.Client.Get(ctx, client.ObjectKey{Namespace: mgmtNS, Name: GatewayLoadBalancerName(ns, "gw")}, &gwLB); err != nil {
		t.Fatalf("the Gateway's LoadBalancer: %v", err)
	}
	if want := []v1.GatewayListener{{Name: "http", Port: 80, Protocol: v1.ListenerHTTP, Hostname: "*.example.com"},
		{Name: "https", Port: 443, Protocol: v1.ListenerHTTPS, Hostname: "*.example.com", CertificateSecrets: []string{ns + ".cert"}}}; !equality.Semantic.DeepEqual(gwLB.Spec.Listeners, want) {
		t.Errorf("listeners %+v, want %+v", gwLB.Spec.Listeners, want)
	}
	apiNP, webNP := v1.PortNumber(api.Spec.Ports[0].NodePort), v1.PortNumber(companion.Spec.Ports[0].NodePort)
	be := func(svc string, port, np v1.PortNumber, w int32) v1.RouteBackend {
		return v1.RouteBackend{ServiceName: svc, ServicePort: ptr.To(port), NodePort: np, Weight: ptr.To(w), Protocol: v1.BackendHTTP}
	}
	wantRules := []v1.RouteRule{
		{Matches: []v1.RouteMatch{{Path: &v1.PathMatch{Type: v1.PathExact, Value: "/old"}}},
			Filters: []v1.RouteFilter{{Type: v1.FilterRequestRedirect, RequestRedirect: &v1.RequestRedirect{Scheme: "https", StatusCode: 301}}}},
		// Its only backend does not exist: kept without backends, the fleet answers 500.
		{Matches: []v1.RouteMatch{{Path: &v1.PathMatch{Type: v1.PathPrefix, Value: "/missing"}}}},
		{Matches: []v1.RouteMatch{{Path: &v1.PathMatch{Type: v1.PathPrefix, Value: "/api"}, Headers: []v1.HeaderMatch{{Type: v1.MatchExact, Name: "x-env", Value: "canary"}}}},
			Backends: []v1.RouteBackend{be("api", 8080, apiNP, 1), be("web", 80, webNP, 3)}},
		{Matches: []v1.RouteMatch{{Path: &v1.PathMatch{Type: v1.PathPrefix, Value: "/v2"}}},
			Filters:  []v1.RouteFilter{{Type: v1.FilterURLRewrite, URLRewrite: &v1.URLRewrite{Path: &v1.PathModifier{Type: v1.ReplacePrefixMatch, Value: "/"}}}},
			Backends: []v1.RouteBackend{be("web", 80, webNP, 1)}},
	}
	if !equality.Semantic.DeepEqual(rt.Spec.Rules, wantRules) {
		t.Errorf("rules\n got %+v\nwant %+v", rt.Spec.Rules, wantRules)
	}
	eventually(t, "listener certificate copied", func() error {
		var s corev1.Secret
		return mgmtEnv.Client.Get(ctx, client.ObjectKey{Namespace: mgmtNS, Name: secrets.CopyName(ns, "cert")}, &s)
	})

	// Parent status: accepted, the missing backend reported.
	eventually(t, "parent status", func() error {
		if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(hr), hr); err != nil {
			return err
		}
		if err := wantCondition(parentCondition(hr.Status.RouteStatus, "gw", gwv1.RouteConditionAccepted), metav1.ConditionTrue, "Accepted", hr.Generation); err != nil {
			return err
		}
		c := parentCondition(hr.Status.RouteStatus, "gw", gwv1.RouteConditionResolvedRefs)
		if err := wantCondition(c, metav1.ConditionFalse, "BackendNotFound", hr.Generation); err != nil {
			return err
		}
		if !strings.Contains(c.Message, "nothere") {
			return fmt.Errorf("message %q", c.Message)
		}
		return nil
	})

	// The fleet serves it: the Gateway gets its address, listeners count the route.
	serveGateway(t, &gwLB, "127.0.40.1")
	rt, _ = getRoute(name)
	rt.Status.ObservedGeneration = rt.Generation
	rt.Status.Conditions = []metav1.Condition{{Type: v1.ConditionAccepted, Status: metav1.ConditionFalse, Reason: v1.ReasonHostnameConflict,
		Message: "hostname shop.example.com is held by another tenant", ObservedGeneration: rt.Generation, LastTransitionTime: metav1.Now()}}
	if err := mgmtEnv.Client.Status().Update(ctx, rt); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Gateway status", func() error {
		if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(gw), gw); err != nil {
			return err
		}
		if a := gw.Status.Addresses; len(a) != 1 || a[0].Value != "127.0.40.1" || *a[0].Type != gwv1.IPAddressType {
			return fmt.Errorf("addresses %+v", a)
		}
		if err := wantCondition(meta.FindStatusCondition(gw.Status.Conditions, "Programmed"), metav1.ConditionTrue, "Programmed", gw.Generation); err != nil {
			return err
		}
		if len(gw.Status.Listeners) != 2 {
			return fmt.Errorf("listeners %+v", gw.Status.Listeners)
		}
		for _, l := range gw.Status.Listeners {
			if l.AttachedRoutes != 1 || len(l.SupportedKinds) != 2 {
				return fmt.Errorf("listener %s: attached %d kinds %v", l.Name, l.AttachedRoutes, l.SupportedKinds)
			}
			for _, ct := range []string{"Accepted", "ResolvedRefs", "Programmed"} {
				if err := wantCondition(meta.FindStatusCondition(l.Conditions, ct), metav1.ConditionTrue, ct, gw.Generation); err != nil {
					return fmt.Errorf("listener %s: %v", l.Name, err)
				}
			}
		}
		return nil
	})
	eventually(t, "fleet refusal on the parent", func() error {
		if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(hr), hr); err != nil {
			return err
		}
		return wantCondition(parentCondition(hr.Status.RouteStatus, "gw", gwv1.RouteConditionAccepted), metav1.ConditionFalse, v1.ReasonHostnameConflict, hr.Generation)
	})
	eventually(t, "fleet refusal as a Warning event on the HTTPRoute", func() error {
		var evs eventsv1.EventList
		if err := tenantEnv.Client.List(ctx, &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Regarding.Name == hr.Name && e.Regarding.Kind == "HTTPRoute" && e.Type == corev1.EventTypeWarning &&
				e.Reason == v1.ReasonHostnameConflict && strings.Contains(e.Note, "held by another tenant") {
				return nil
			}
		}
		return fmt.Errorf("no HostnameConflict event among %d", len(evs.Items))
	})
	// Those reconciles found nothing else to change: the Route was not rewritten.
	if now, err := getRoute(name); err != nil || now.ResourceVersion != rt.ResourceVersion {
		t.Errorf("route rewritten without a change: %v %s → %s", err, rt.ResourceVersion, now.ResourceVersion)
	}
	gwRV := gw.ResourceVersion
	if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(gw), gw); err != nil || gw.ResourceVersion != gwRV {
		t.Errorf("Gateway status rewritten without a change: %v", err)
	}

	// Deleted: Route, companion and finalizer go; the listener counts drop.
	if err := tenantEnv.Client.Delete(ctx, hr); err != nil {
		t.Fatal(err)
	}
	eventually(t, "route removed", gone(func() error { _, err := getRoute(name); return err }))
	eventually(t, "HTTPRoute gone", gone(func() error { return tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(hr), &gwv1.HTTPRoute{}) }))
	eventually(t, "companion removed", gone(func() error {
		return tenantEnv.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web-fleetlb"}, &corev1.Service{})
	}))
	eventually(t, "attached routes 0", func() error {
		if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(gw), gw); err != nil {
			return err
		}
		for _, l := range gw.Status.Listeners {
			if l.AttachedRoutes != 0 {
				return fmt.Errorf("listener %s: %d attached", l.Name, l.AttachedRoutes)
			}
		}
		return nil
	})
}

func TestGRPCRoute(t *testing.T) {
	ctx := context.Background()
	ns := testNamespace(t)
	svc := service(ns, "echo", corev1.ServiceTypeNodePort, 9000)
	gw := gatewayOf(ns, "gw", DefaultClass, gwv1.Listener{Name: "http", Protocol: gwv1.HTTPProtocolType, Port: 80})
	gr := &gwv1.GRPCRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "echo"},
		Spec: gwv1.GRPCRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "gw", SectionName: ptr.To(gwv1.SectionName("http"))}}},
			Hostnames:       []gwv1.Hostname{"grpc.example.com"},
			Rules: []gwv1.GRPCRouteRule{{
				Matches: []gwv1.GRPCRouteMatch{{Method: &gwv1.GRPCMethodMatch{Service: ptr.To("echo.Echo"), Method: ptr.To("Say")},
					Headers: []gwv1.GRPCHeaderMatch{{Name: "x-tenant", Value: "a"}}}},
				BackendRefs: []gwv1.GRPCBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "echo", Port: ptr.To(gwv1.PortNumber(9000))}}}},
			}},
		},
	}
	create(t, svc, gw, gr)
	var rt *v1.Route
	eventually(t, "management Route", func() (err error) { rt, err = getRoute(RouteName("grpcroute", ns, "echo")); return err })
	if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
		t.Fatal(err)
	}
	want := []v1.RouteRule{{
		Matches:  []v1.RouteMatch{{Path: &v1.PathMatch{Type: v1.PathExact, Value: "/echo.Echo/Say"}, Headers: []v1.HeaderMatch{{Type: v1.MatchExact, Name: "x-tenant", Value: "a"}}}},
		Backends: []v1.RouteBackend{{ServiceName: "echo", ServicePort: ptr.To(v1.PortNumber(9000)), NodePort: v1.PortNumber(svc.Spec.Ports[0].NodePort), Weight: ptr.To[int32](1), Protocol: v1.BackendGRPC}},
	}}
	if rt.Spec.Source.Kind != v1.SourceGRPCRoute || !slices.Equal(rt.Spec.Hostnames, []v1.Hostname{"grpc.example.com"}) || !equality.Semantic.DeepEqual(rt.Spec.Rules, want) {
		t.Errorf("route %+v\nwant rules %+v", rt.Spec, want)
	}
	eventually(t, "parent accepted", func() error {
		if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(gr), gr); err != nil {
			return err
		}
		return wantCondition(parentCondition(gr.Status.RouteStatus, "gw", gwv1.RouteConditionAccepted), metav1.ConditionTrue, "Accepted", gr.Generation)
	})
	// Detached (its parent is now a Gateway we do not serve): Route, our
	// parent status and the finalizer go.
	eventually(t, "detach", func() error {
		if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(gr), gr); err != nil {
			return err
		}
		gr.Spec.ParentRefs = []gwv1.ParentReference{{Name: "not-ours"}}
		return tenantEnv.Client.Update(ctx, gr)
	})
	eventually(t, "route removed", gone(func() error { _, err := getRoute(RouteName("grpcroute", ns, "echo")); return err }))
	eventually(t, "parent status and finalizer removed", func() error {
		if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(gr), gr); err != nil {
			return err
		}
		if len(gr.Status.Parents) != 0 || controllerutil.ContainsFinalizer(gr, Finalizer) {
			return fmt.Errorf("parents %+v finalizers %v", gr.Status.Parents, gr.Finalizers)
		}
		return nil
	})
}

// Cross-namespace backends need a ReferenceGrant; listeners admit routes
// from their own namespace only unless they say otherwise; Gateways of other
// classes are not ours.
func TestReferenceGrantsAndAllowedRoutes(t *testing.T) {
	ctx := context.Background()
	ns, other := testNamespace(t), testNamespace(t)
	create(t, service(other, "shared", corev1.ServiceTypeNodePort, 80),
		gatewayOf(ns, "gw", DefaultClass, gwv1.Listener{Name: "http", Protocol: gwv1.HTTPProtocolType, Port: 80}),
		gatewayOf(ns, "foreign", "someone-else", gwv1.Listener{Name: "http", Protocol: gwv1.HTTPProtocolType, Port: 80}))
	mk := func(routeNS, name, gwName string) *gwv1.HTTPRoute {
		return &gwv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Namespace: routeNS, Name: name},
			Spec: gwv1.HTTPRouteSpec{
				CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: gwv1.ObjectName(gwName), Namespace: ptr.To(gwv1.Namespace(ns))}}},
				Hostnames:       []gwv1.Hostname{gwv1.Hostname(name + ".example.com")},
				Rules:           []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{backendRef(ptr.To(other), "shared", 80, 1)}}},
			},
		}
	}
	cross := mk(ns, "cross", "gw")
	outsider := mk(other, "outsider", "gw")
	foreign := mk(ns, "foreign", "foreign")
	create(t, cross, outsider, foreign)

	eventually(t, "RefNotPermitted", func() error {
		if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(cross), cross); err != nil {
			return err
		}
		return wantCondition(parentCondition(cross.Status.RouteStatus, "gw", gwv1.RouteConditionResolvedRefs), metav1.ConditionFalse, "RefNotPermitted", cross.Generation)
	})
	// Still served, its rule without a backend: the fleet answers it with 500 (Gateway API).
	if rt, err := getRoute(RouteName("httproute", ns, "cross")); err != nil || len(rt.Spec.Rules) != 1 || len(rt.Spec.Rules[0].Backends) != 0 {
		t.Errorf("a route with no permitted backend: %v %+v, want its rule without backends", err, rt)
	}
	eventually(t, "NotAllowedByListeners", func() error {
		if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(outsider), outsider); err != nil {
			return err
		}
		return wantCondition(parentCondition(outsider.Status.RouteStatus, "gw", gwv1.RouteConditionAccepted), metav1.ConditionFalse, "NotAllowedByListeners", outsider.Generation)
	})

	create(t, &gwv1.ReferenceGrant{
		ObjectMeta: metav1.ObjectMeta{Namespace: other, Name: "allow"},
		Spec: gwv1.ReferenceGrantSpec{
			From: []gwv1.ReferenceGrantFrom{{Group: gwv1.GroupName, Kind: "HTTPRoute", Namespace: gwv1.Namespace(ns)}},
			To:   []gwv1.ReferenceGrantTo{{Group: "", Kind: "Service"}},
		},
	})
	eventually(t, "Route after the grant", func() error {
		rt, err := getRoute(RouteName("httproute", ns, "cross"))
		if err != nil {
			return err
		}
		if len(rt.Spec.Rules) != 1 || len(rt.Spec.Rules[0].Backends) != 1 || rt.Spec.Rules[0].Backends[0].ServiceName != "shared" {
			return fmt.Errorf("rules %+v", rt.Spec.Rules)
		}
		return nil
	})
	eventually(t, "ResolvedRefs after the grant", func() error {
		if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(cross), cross); err != nil {
			return err
		}
		return wantCondition(parentCondition(cross.Status.RouteStatus, "gw", gwv1.RouteConditionResolvedRefs), metav1.ConditionTrue, "ResolvedRefs", cross.Generation)
	})

	if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(foreign), foreign); err != nil {
		t.Fatal(err)
	}
	if len(foreign.Status.Parents) != 0 || controllerutil.ContainsFinalizer(foreign, Finalizer) {
		t.Errorf("a route of another class's Gateway was touched: %+v %v", foreign.Status.Parents, foreign.Finalizers)
	}
	if _, err := getRoute(RouteName("httproute", ns, "foreign")); !apierrors.IsNotFound(err) {
		t.Errorf("a route of another class's Gateway got a Route (%v)", err)
	}
}

// A listener whose certificate is missing is not programmed until the Secret appears.
func TestListenerCertificateRef(t *testing.T) {
	ctx := context.Background()
	ns := testNamespace(t)
	gw := gatewayOf(ns, "gw", DefaultClass,
		gwv1.Listener{Name: "https", Protocol: gwv1.HTTPSProtocolType, Port: 443,
			TLS: &gwv1.ListenerTLSConfig{CertificateRefs: []gwv1.SecretObjectReference{{Name: "later"}}}},
		gwv1.Listener{Name: "tcp", Protocol: gwv1.TCPProtocolType, Port: 5432})
	create(t, gw)
	listener := func(name, cond string, status metav1.ConditionStatus, reason string) func() error {
		return func() error {
			if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(gw), gw); err != nil {
				return err
			}
			for _, l := range gw.Status.Listeners {
				if string(l.Name) == name {
					return wantCondition(meta.FindStatusCondition(l.Conditions, cond), status, reason, gw.Generation)
				}
			}
			return fmt.Errorf("no status for listener %s", name)
		}
	}
	eventually(t, "missing certificate", listener("https", "ResolvedRefs", metav1.ConditionFalse, "InvalidCertificateRef"))
	eventually(t, "https not programmed", listener("https", "Programmed", metav1.ConditionFalse, "Invalid"))
	eventually(t, "tcp unsupported", listener("tcp", "Accepted", metav1.ConditionFalse, "UnsupportedProtocol"))
	eventually(t, "Gateway accepted with invalid listeners", func() error {
		if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(gw), gw); err != nil {
			return err
		}
		return wantCondition(meta.FindStatusCondition(gw.Status.Conditions, "Accepted"), metav1.ConditionTrue, "ListenersNotValid", gw.Generation)
	})
	// A Secret that is there but holds no certificate is not a usable reference.
	later := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "later"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: []byte("crt"), corev1.TLSPrivateKeyKey: []byte("key")}}
	create(t, later)
	eventually(t, "malformed certificate", func() error {
		if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(gw), gw); err != nil {
			return err
		}
		for _, l := range gw.Status.Listeners {
			if c := meta.FindStatusCondition(l.Conditions, "ResolvedRefs"); l.Name == "https" && c != nil && c.Reason == "InvalidCertificateRef" && strings.Contains(c.Message, "no usable certificate") {
				return nil
			}
		}
		return fmt.Errorf("listeners %+v", gw.Status.Listeners)
	})
	later.Data = tlsData(t, "www.example.com")
	if err := tenantEnv.Client.Update(ctx, later); err != nil {
		t.Fatal(err)
	}
	eventually(t, "certificate resolved", listener("https", "ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs"))
	// Programmed once the fleet serves the Gateway's listeners (no route needed).
	eventually(t, "https waits for the fleet", listener("https", "Programmed", metav1.ConditionFalse, "Pending"))
	lb := &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: mgmtNS, Name: GatewayLoadBalancerName(ns, "gw")}}
	if err := mgmtEnv.Client.Get(ctx, client.ObjectKeyFromObject(lb), lb); err != nil {
		t.Fatal(err)
	}
	if len(lb.Spec.Listeners) != 1 || lb.Spec.Listeners[0].Name != "https" {
		t.Errorf("listeners the fleet is asked to serve: %+v (tcp is not supported)", lb.Spec.Listeners)
	}
	serveGateway(t, lb, "127.0.40.2")
	eventually(t, "https programmed", listener("https", "Programmed", metav1.ConditionTrue, "Programmed"))
}

// tlsData is the data of a kubernetes.io/tls Secret for hosts.
func tlsData(t *testing.T, hosts ...string) map[string][]byte {
	t.Helper()
	ca, err := testcerts.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	crt, key, _, err := ca.Issue(hosts...)
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key}
}

// A deleted HTTPRoute goes at once (no finalizer), not when the fleet is
// done with its Route; the deletion event removes the Route. A client that re-creates it by name
// meanwhile (the conformance suite does) gets a new route, served once the
// old Route is gone, and the Gateway counts it.
func TestDeletedRouteGoesWhileItsRouteTerminates(t *testing.T) {
	ctx := context.Background()
	ns := testNamespace(t)
	newRoute := func() *gwv1.HTTPRoute {
		return &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "again"}, Spec: gwv1.HTTPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "gw"}}},
			Rules:           []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{backendRef(nil, "web", 80, 1)}}}}}
	}
	gw := gatewayOf(ns, "gw", DefaultClass, gwv1.Listener{Name: "http", Protocol: gwv1.HTTPProtocolType, Port: 80})
	hr := newRoute()
	create(t, service(ns, "web", corev1.ServiceTypeNodePort, 80), gw, hr)
	name := RouteName("httproute", ns, "again")
	var rt *v1.Route
	eventually(t, "management Route", func() (err error) { rt, err = getRoute(name); return err })
	// The fleet holds the old Route for a while.
	const hold = "test.fleetlb.io/hold"
	rt.Finalizers = append(rt.Finalizers, hold)
	if err := mgmtEnv.Client.Update(ctx, rt); err != nil {
		t.Fatal(err)
	}
	if err := tenantEnv.Client.Delete(ctx, hr); err != nil {
		t.Fatal(err)
	}
	eventually(t, "HTTPRoute gone while its Route terminates", gone(func() error {
		return tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(hr), &gwv1.HTTPRoute{})
	}))
	eventually(t, "the old Route terminating", func() error {
		old, err := getRoute(name)
		if err == nil && old.DeletionTimestamp.IsZero() {
			err = errors.New("not being deleted")
		}
		return err
	})
	again := newRoute()
	create(t, again)
	if err := mgmtEnv.Client.Get(ctx, client.ObjectKeyFromObject(rt), rt); err != nil {
		t.Fatal(err)
	}
	rt.Finalizers = slices.DeleteFunc(rt.Finalizers, func(f string) bool { return f == hold })
	if err := mgmtEnv.Client.Update(ctx, rt); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a Route for the new HTTPRoute", func() error {
		now, err := getRoute(name)
		if err != nil {
			return err
		}
		if now.Spec.Source.UID != string(again.UID) {
			return fmt.Errorf("Route of source %s, want %s", now.Spec.Source.UID, again.UID)
		}
		return nil
	})
	eventually(t, "attached routes 1", func() error {
		if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(gw), gw); err != nil {
			return err
		}
		if len(gw.Status.Listeners) != 1 || gw.Status.Listeners[0].AttachedRoutes != 1 {
			return fmt.Errorf("listeners %+v", gw.Status.Listeners)
		}
		return nil
	})
}

// With no finalizer on routes, a Route whose HTTPRoute is gone (deleted
// while the ccm was down) is removed when the ccm sees the Route: its own
// event, as on the ccm's start, reconciles the missing source.
func TestRouteOfMissingHTTPRouteIsRemoved(t *testing.T) {
	ns := testNamespace(t)
	name := RouteName("httproute", ns, "gone")
	orphan := &v1.Route{
		ObjectMeta: metav1.ObjectMeta{Namespace: mgmtNS, Name: name,
			Labels: map[string]string{labelSourceKind: string(v1.SourceHTTPRoute), labelSourceNamespace: ns}},
		Spec: v1.RouteSpec{
			Source:    v1.RouteSource{Kind: v1.SourceHTTPRoute, Cluster: "cluster-a", Namespace: ns, Name: "gone", UID: "u-gone"},
			Hostnames: []v1.Hostname{"gone.example.com"},
			Rules:     []v1.RouteRule{{Backends: []v1.RouteBackend{{ServiceName: "web", NodePort: 30080}}}},
		},
	}
	if err := mgmtEnv.Client.Create(context.Background(), orphan); err != nil {
		t.Fatal(err)
	}
	eventually(t, "orphan Route removed", gone(func() error { _, err := getRoute(name); return err }))
}
