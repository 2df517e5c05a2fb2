//go:build conformance

package conformance

import (
	"cmp"
	"context"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1alpha2 "sigs.k8s.io/gateway-api/apis/v1alpha2"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	gwconformance "sigs.k8s.io/gateway-api/conformance"
	"sigs.k8s.io/gateway-api/conformance/tests"
	"sigs.k8s.io/gateway-api/conformance/utils/config"
	gwkube "sigs.k8s.io/gateway-api/conformance/utils/kubernetes"
	"sigs.k8s.io/gateway-api/conformance/utils/roundtripper"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/gateway-api/pkg/features"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/e2e/harness"
)

func init() { ctrllog.SetLogger(logr.Discard()) }

// gatewayClass is the class the ccm creates and serves.
const gatewayClass = "fleetlb"

// hostnames the conformance tenant may claim: every host name the HTTPRoute,
// GRPCRoute and Gateway manifests of the suite use (a Tenant wildcard
// matches exactly one more label).
var hostnames = []v1.Hostname{
	"example.com", "*.example.com", "*.foo.example.com", "example.org", "*.example.org", "example.net", "*.example.net",
	"foo.com", "*.foo.com", "bar.com", "*.bar.com", "*.foo.bar.com",
	"wildcard.io", "*.wildcard.io", "*.anotherwildcard.io", "*.nonmatchingwildcard.io", "*.wildcard.org",
	"first-example.org", "second-example.org", "third-example.org", "fourth-example.org",
	"first.com", "*.first.com", "second.com", "*.second.com",
	"very.specific.com", "*.specific.com", "specific.but.wrong.com", "non.matching.com", "*.test.com",
	"rewrite.example", "*.rewrite.example",
}

// Why a test is skipped: every one of these sends requests through the
// Gateway and checks the reply of the suite's echo Pods (their name and
// namespace, echoed headers, a gRPC echo), and the echo Deployments have no
// Pods here. The second half of each reason is what a run with
// CONFORMANCE_TRAFFIC=1 showed: how far the test gets without Pods.
const (
	podsHTTP = "needs pods (checks the echo-basic Pods' replies)"
	podsGRPC = "needs pods (checks the gRPC echo Pods' replies)"

	earlyNoHost        = "; without Pods it fails first on status: its routes have no hostname, are not attached (NoMatchingListenerHostname), the Gateway gets no address"
	earlyNotProgrammed = "; without Pods it fails first on status: base Gateways not Programmed (NamespacesMustBeReady)"
	reachesProxy       = "; status passes, the requests reach fleetlb-proxy on the VIP and get 503 (no backend)"
	reachesProxyTLS    = "; status passes, the requests reach fleetlb-proxy's HTTPS listener on the VIP and no backend answers"
)

// skipped are the core tests that need Pods, with why.
var skipped = map[string]string{
	"GRPCExactMethodMatching":                           podsGRPC + earlyNoHost,
	"GRPCRouteHeaderMatching":                           podsGRPC + earlyNoHost,
	"GRPCRouteListenerHostnameMatching":                 podsGRPC + earlyNotProgrammed,
	"GRPCRouteWeight":                                   podsGRPC + earlyNoHost,
	"HTTPRouteCrossNamespace":                           podsHTTP + earlyNoHost,
	"HTTPRouteExactPathMatching":                        podsHTTP + earlyNoHost,
	"HTTPRouteHTTPSListener":                            podsHTTP + reachesProxyTLS,
	"HTTPRouteHeaderMatching":                           podsHTTP + earlyNoHost,
	"HTTPRouteHostnameIntersection":                     podsHTTP + earlyNotProgrammed,
	"HTTPRouteInvalidBackendRefUnknownKind":             podsHTTP + earlyNoHost,
	"HTTPRouteInvalidCrossNamespaceBackendRef":          podsHTTP + earlyNoHost,
	"HTTPRouteInvalidNonExistentBackendRef":             podsHTTP + earlyNoHost,
	"HTTPRouteInvalidReferenceGrant":                    podsHTTP + earlyNoHost,
	"HTTPRouteListenerHostnameMatching":                 podsHTTP + earlyNotProgrammed,
	"HTTPRouteMatching":                                 podsHTTP + earlyNoHost,
	"HTTPRouteMatchingAcrossRoutes":                     podsHTTP + reachesProxy,
	"HTTPRouteMultipleGateways":                         podsHTTP + earlyNoHost,
	"HTTPRouteNoBackendRefs":                            podsHTTP + earlyNoHost,
	"HTTPRoutePartiallyInvalidViaInvalidReferenceGrant": podsHTTP + earlyNoHost,
	"HTTPRoutePathMatchOrder":                           podsHTTP + earlyNoHost,
	"HTTPRouteRedirectHostAndStatus":                    podsHTTP + earlyNoHost,
	"HTTPRouteReferenceGrant":                           podsHTTP + earlyNoHost,
	"HTTPRouteRequestHeaderModifier":                    podsHTTP + earlyNoHost,
	"HTTPRouteServiceTypes":                             podsHTTP + earlyNoHost,
	"HTTPRouteSimpleSameNamespace":                      podsHTTP + earlyNoHost,
	"HTTPRouteWeight":                                   podsHTTP + earlyNoHost,
}

// failing are the tests that fail on fleetlb itself, with the assertion that
// fails (see README.md, "Gateway API conformance"). A test failing that is not
// here is reported as unexpected.
var failing = map[string]string{
	"GatewayInvalidTLSConfiguration": "product: a listener whose TLS Secret holds a malformed certificate gets ResolvedRefs True, " +
		"expected False/InvalidCertificateRef (the ccm only checks that the Secret exists)",
	"GatewayListenerUnsupportedProtocol": "product: Gateway Accepted is always True/Accepted, expected False/ListenersNotValid " +
		"(no valid listener) and True/ListenersNotValid (some invalid); the listener conditions are right",
	"GatewayModifyListeners":          notProgrammed,
	"GatewayObservedGenerationBump":   notProgrammed,
	"HTTPRouteObservedGenerationBump": notProgrammed + "; its route has no hostname either",
	"GatewayWithAttachedRoutes": "product: a listener without hostname counts no HTTPRoute without hostnames " +
		"(attachedRoutes 0, expected 1; the ccm serves named hosts only)",
}

// notProgrammed: the test calls NamespacesMustBeReady, which requires every
// Gateway of the namespace to be Programmed.
const notProgrammed = "product: NamespacesMustBeReady times out: base Gateways without routes stay Programmed False/AddressNotAssigned " +
	"(the ccm takes addresses only from served Routes)"

// supported are the core features of the GATEWAY-HTTP and GATEWAY-GRPC
// profiles: fleetlb claims no extended feature here.
var supported = []features.FeatureName{
	features.SupportGateway, features.SupportHTTPRoute, features.SupportReferenceGrant, features.SupportGRPCRoute,
}

// timeouts are shorter than the suite's defaults (minutes): status comes back
// within a second here, and a failing assertion should not cost three minutes.
func timeouts() config.TimeoutConfig {
	tc := config.DefaultTimeoutConfig()
	for _, d := range []*time.Duration{
		&tc.GatewayMustHaveAddress, &tc.GatewayMustHaveCondition, &tc.GatewayStatusMustHaveListeners,
		&tc.GatewayListenersMustHaveConditions, &tc.HTTPRouteMustNotHaveParents, &tc.HTTPRouteMustHaveCondition,
		&tc.RouteMustHaveParents, &tc.NamespacesMustBeReady, &tc.LatestObservedGenerationSet,
	} {
		*d = 30 * time.Second
	}
	tc.GWCMustBeAccepted = 60 * time.Second
	tc.MaxTimeToConsistency = 20 * time.Second
	tc.DefaultTestTimeout = 60 * time.Second
	tc.TestIsolation = 0
	return tc
}

type result struct {
	name, result, why string
	features          []features.FeatureName
}

func TestGatewayAPIConformance(t *testing.T) {
	start := time.Now()
	tc := startTenant(t)

	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme,
		gwv1.Install, gwv1beta1.Install, gwv1alpha2.Install} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	cfg := tc.Env.Config
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var loops sync.WaitGroup
	t.Cleanup(func() { cancel(); loops.Wait() })
	loops.Go(func() { playKubelet(ctx, c, t.Logf) })
	loops.Go(func() { playNamespaceController(ctx, c, cs, t.Logf) })

	skip := map[string]string{}
	if os.Getenv("CONFORMANCE_TRAFFIC") == "" {
		skip = skipped
	}
	var (
		mu      sync.Mutex
		results []result
	)
	opts := suite.ConformanceOptions{
		ConfigurableOptions: suite.ConfigurableOptions{
			GatewayClassName:     gatewayClass,
			CleanupBaseResources: true,
			CleanupTestResources: true,
			SupportedFeatures:    supported,
			SkipTests:            slices.Sorted(maps.Keys(skip)),
			TimeoutConfig:        timeouts(),
			RunTest:              os.Getenv("CONFORMANCE_RUN_TEST"),
			Debug:                os.Getenv("CONFORMANCE_DEBUG") != "",
		},
		Client:        c,
		ClientOptions: client.Options{Scheme: scheme},
		Clientset:     cs,
		RoundTripper:  &roundtripper.DefaultRoundTripper{TimeoutConfig: timeouts(), CustomDialContext: dialFleet},
		RestConfig:    rest.CopyConfig(cfg),
		ManifestFS:    []fs.FS{&gwconformance.Manifests},
		Hook: func(t *testing.T, test suite.ConformanceTest, s *suite.ConformanceTestSuite) {
			r := result{name: test.ShortName, features: test.Features}
			switch {
			case t.Failed():
				r.result, r.why = "fail", cmp.Or(failing[test.ShortName], "unexpected: see the log")
			case !s.SupportedFeatures.HasAll(test.Features...):
				r.result = "not supported"
			case t.Skipped() && skip[test.ShortName] != "":
				r.result, r.why = "skip", skip[test.ShortName]
			case t.Skipped():
				r.result = "skip"
			default:
				r.result = "pass"
			}
			mu.Lock()
			results = append(results, r)
			mu.Unlock()
		},
	}
	s, err := suite.NewConformanceTestSuite(opts)
	if err != nil {
		t.Fatal(err)
	}
	// On t itself: the base resources are deleted by t's cleanup, after every test.
	setup(t, s)
	// Run runs each test as a subtest; parallel ones finish when this t.Run returns.
	t.Run("Conformance", func(t *testing.T) {
		if err := s.Run(t, tests.ConformanceTests); err != nil {
			t.Fatal(err)
		}
	})
	report(t, results, time.Since(start))
}

// startTenant starts a fleet (manager, one proxy) and one tenant with its ccm.
func startTenant(t *testing.T) *harness.Tenant {
	t.Helper()
	binDir := t.TempDir()
	if err := harness.Build(binDir); err != nil {
		t.Fatal(err)
	}
	h, err := harness.New(binDir, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() && os.Getenv("CONFORMANCE_OUTPUT") != "" {
			t.Log(h.Output())
		}
		h.Close()
	})
	f, err := h.StartFleet("127.0.90.1-127.0.90.8")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.StartProxy(true); err != nil {
		t.Fatal(err)
	}
	tc, err := f.AddTenantWith("conformance", v1.TenantSpec{AddressPool: "vips", Hostnames: hostnames})
	if err != nil {
		t.Fatal(err)
	}
	if err := tc.AddNode("node-1", "127.0.91.1", "z1"); err != nil {
		t.Fatal(err)
	}
	return tc
}

// setup is suite.Setup for the Gateway profiles without its last step,
// NamespacesMustBeReady: that one waits for every base Gateway to be
// Programmed and is asserted by the tests that need it (and reported there).
func setup(t *testing.T, s *suite.ConformanceTestSuite) {
	s.Applier.ManifestFS = s.ManifestFS
	s.Applier.UsableNetworkAddresses = s.UsableNetworkAddresses
	s.Applier.UnusableNetworkAddresses = s.UnusableNetworkAddresses
	// The ccm creates the GatewayClass when it starts; the suite's check
	// fails at once on NotFound.
	if err := harness.Eventually(60*time.Second, func() error {
		return s.Client.Get(context.Background(), client.ObjectKey{Name: s.GatewayClassName}, &gwv1.GatewayClass{})
	}); err != nil {
		t.Fatalf("GatewayClass %s: %v", s.GatewayClassName, err)
	}
	s.ControllerName = gwkube.GWCMustHaveAcceptedConditionTrue(t, s.Client, s.TimeoutConfig, s.GatewayClassName)
	s.Applier.GatewayClass = s.GatewayClassName
	s.Applier.ControllerName = s.ControllerName
	s.Applier.MustApplyWithCleanup(t, s.Client, s.TimeoutConfig, s.BaseManifests, s.Cleanup)

	apply := func(objs ...client.Object) {
		s.Applier.MustApplyObjectsWithCleanup(t, s.Client, s.TimeoutConfig, objs, s.Cleanup)
	}
	apply(gwkube.MustCreateSelfSignedCertSecret(t, suite.WebBackendNamespace, "certificate", []string{"*"}))
	apply(gwkube.MustCreateSelfSignedCertSecret(t, suite.InfrastructureNamespace, "tls-validity-checks-certificate", []string{"*", "*.org", "*.wildcard.org"}))
	cm, _, _ := gwkube.MustCreateCACertConfigMap(t, suite.WebBackendNamespace, "web-backend-cm")
	apply(cm)
	cm, ca, key := gwkube.MustCreateCACertConfigMap(t, suite.InfrastructureNamespace, "tls-validity-checks-ca-certificate")
	apply(cm, gwkube.MustCreateCASignedClientCertSecret(t, suite.InfrastructureNamespace, "tls-validity-checks-client-certificate", ca, key))
	cm, ca, key = gwkube.MustCreateCACertConfigMap(t, suite.InfrastructureNamespace, "tls-checks-ca-certificate")
	apply(cm,
		gwkube.MustCreateCASignedCertSecret(t, suite.InfrastructureNamespace, "tls-checks-certificate", []string{"abc.example.com", "spiffe://abc.example.com/test-identity", "other.example.com"}, ca, key),
		gwkube.MustCreateCASignedClientCertSecret(t, suite.InfrastructureNamespace, "tls-checks-client-certificate", ca, key))

	// What NamespacesMustBeReady would have waited for, minus Programmed:
	// every base Gateway Accepted, and the fake Pods Ready.
	for _, name := range []string{"same-namespace", "same-namespace-with-https-listener", "all-namespaces", "backend-namespaces"} {
		gwkube.GatewayMustHaveCondition(t, s.Client, s.TimeoutConfig, types.NamespacedName{Namespace: suite.InfrastructureNamespace, Name: name},
			gwkube.GetGatewayAcceptedCondition())
	}
}

func report(t *testing.T, results []result, wall time.Duration) {
	slices.SortFunc(results, func(a, b result) int {
		return cmp.Or(cmp.Compare(order(a.result), order(b.result)), strings.Compare(a.name, b.name))
	})
	counts := map[string]int{}
	var b strings.Builder
	b.WriteString("| test | result | why |\n|---|---|---|\n")
	for _, r := range results {
		counts[r.result]++
		if r.result == "not supported" {
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", r.name, r.result, r.why)
	}
	t.Logf("Gateway API conformance on fleetlb (%s): pass %d, fail %d, skip %d, not supported (extended features) %d; wall time %s\n%s",
		gatewayClass, counts["pass"], counts["fail"], counts["skip"], counts["not supported"], wall.Round(time.Second), b.String())
}

func order(r string) int {
	return slices.Index([]string{"pass", "fail", "skip", "not supported"}, r)
}

// dialFleet is the suite's dialer for requests through a Gateway. The Gateway
// address is the fleet's shared VIP (127.0.0.0/8 here) and the listeners' ports
// 80 and 443 are served on the fleet's HTTP and HTTPS ports (8080, 8443 in the
// harness, which runs unprivileged). Anything outside 127.0.0.0/8 is refused.
func dialFleet(ctx context.Context, network, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !netip.MustParsePrefix("127.0.0.0/8").Contains(ap.Addr()) {
		return nil, fmt.Errorf("conformance: refusing to dial %s outside 127.0.0.0/8", addr)
	}
	port := int(ap.Port())
	switch port {
	case 80:
		port = harness.HTTPPort
	case 443:
		port = harness.HTTPSPort
	}
	var d net.Dialer
	return d.DialContext(ctx, network, net.JoinHostPort(ap.Addr().String(), strconv.Itoa(port)))
}
