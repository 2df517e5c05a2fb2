//go:build conformance

package conformance

import (
	"cmp"
	"context"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1alpha2 "sigs.k8s.io/gateway-api/apis/v1alpha2"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	gwconformance "sigs.k8s.io/gateway-api/conformance"
	confv1 "sigs.k8s.io/gateway-api/conformance/apis/v1"
	"sigs.k8s.io/gateway-api/conformance/tests"
	"sigs.k8s.io/gateway-api/conformance/utils/config"
	gwgrpc "sigs.k8s.io/gateway-api/conformance/utils/grpc"
	"sigs.k8s.io/gateway-api/conformance/utils/roundtripper"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/gateway-api/pkg/features"
	"sigs.k8s.io/yaml"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/e2e/harness"
	"github.com/fleetlb/fleetlb/e2e/hollow"
	"github.com/fleetlb/fleetlb/internal/testenv"
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

// Why tests fail (README.md, "Gateway API conformance"). Every cause is the
// shared-VIP model of Gateways in ccm/gateway, which "a VIP per Gateway"
// (issue 12, part 1) replaces; none is about the traffic the hollow Pods see.
const (
	noHostname = "no hostname: its routes have no hostnames on a listener without hostname, are refused " +
		"(Accepted False/NoMatchingListenerHostname), so the Gateway gets no address"
	notProgrammed = "not Programmed: NamespacesMustBeReady times out, the base Gateways without served routes stay " +
		"Programmed False/AddressNotAssigned"
	notAttached = "no hostname: attachedRoutes 0, expected 1 (a route without hostnames is not counted on a listener without hostname)"
	sniCatchAll = "HTTPS catch-all: a request with SNI unknown-example.org to the listener without hostname gets a TLS alert, " +
		"expected the handshake and a 404 (the shared HTTPS listener has filter chains for route hostnames only); " +
		"the two requests with route hostnames reach the hollow Pods and pass"
)

// failing are the tests that fail on fleetlb, with the cause. A test failing
// that is not here is reported as unexpected.
var failing = map[string]string{
	"GatewayHTTPListenerIsolation":      notProgrammed,
	"GatewayModifyListeners":            notProgrammed,
	"GatewayObservedGenerationBump":     notProgrammed,
	"GRPCRouteListenerHostnameMatching": notProgrammed,
	"HTTPRouteHostnameIntersection":     notProgrammed,
	"HTTPRouteListenerHostnameMatching": notProgrammed,
	"HTTPRouteListenerPortMatching":     notProgrammed,
	"HTTPRouteObservedGenerationBump":   notProgrammed,

	"GatewayWithAttachedRoutes":             notAttached,
	"GatewayWithAttachedRoutesWithPort8080": notAttached,

	"HTTPRouteHTTPSListener": sniCatchAll,
}

func init() {
	for _, name := range []string{
		"GRPCExactMethodMatching", "GRPCRouteHeaderMatching", "GRPCRouteNamedRule", "GRPCRouteWeight",
		"HTTPRoute303Redirect", "HTTPRoute307Redirect", "HTTPRoute308Redirect", "HTTPRouteBackendProtocolH2C",
		"HTTPRouteCrossNamespace", "HTTPRouteExactPathMatching", "HTTPRouteHeaderMatching",
		"HTTPRouteInvalidBackendRefUnknownKind", "HTTPRouteInvalidCrossNamespaceBackendRef", "HTTPRouteInvalidNonExistentBackendRef",
		"HTTPRouteInvalidReferenceGrant", "HTTPRouteMatching", "HTTPRouteMethodMatching", "HTTPRouteMultipleGateways",
		"HTTPRouteNamedRule", "HTTPRouteNoBackendRefs", "HTTPRoutePartiallyInvalidViaInvalidReferenceGrant",
		"HTTPRoutePathMatchOrder", "HTTPRouteQueryParamMatching", "HTTPRouteRedirectHostAndStatus", "HTTPRouteRedirectPath",
		"HTTPRouteRedirectPort", "HTTPRouteRedirectPortAndScheme", "HTTPRouteRedirectScheme", "HTTPRouteReferenceGrant",
		"HTTPRouteRequestHeaderModifier", "HTTPRouteResponseHeaderModifier", "HTTPRouteRewritePath", "HTTPRouteServiceTypes",
		"HTTPRouteSimpleSameNamespace", "HTTPRouteTimeoutBackendRequest", "HTTPRouteTimeoutRequest", "HTTPRouteWeight",
	} {
		failing[name] = noHostname
	}
}

// claimed are the extended features fleetlb claims on top of the core
// features of the GATEWAY-HTTP and GATEWAY-GRPC profiles (which the profiles
// enable by themselves). Each is served by ccm/gateway, the model and
// envoy/translate, and fleetlb-proxy. Left out, and why, in README.md.
var claimed = []features.FeatureName{
	features.SupportGatewayPort8080,
	features.SupportGatewayHTTPListenerIsolation,
	features.SupportHTTPRouteQueryParamMatching,
	features.SupportHTTPRouteMethodMatching,
	features.SupportHTTPRouteResponseHeaderModification,
	features.SupportHTTPRoutePortRedirect,
	features.SupportHTTPRouteSchemeRedirect,
	features.SupportHTTPRoutePathRedirect,
	features.SupportHTTPRoute303RedirectStatusCode,
	features.SupportHTTPRoute307RedirectStatusCode,
	features.SupportHTTPRoute308RedirectStatusCode,
	features.SupportHTTPRouteHostRewrite,
	features.SupportHTTPRoutePathRewrite,
	features.SupportHTTPRouteRequestTimeout,
	features.SupportHTTPRouteBackendTimeout,
	features.SupportHTTPRouteParentRefPort,
	features.SupportHTTPRouteBackendProtocolH2C,
	features.SupportHTTPRouteNamedRouteRule,
	features.SupportGRPCRouteNamedRouteRule,
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
	f, tc := startTenant(t)
	if _, err := tc.StartHollowPods(hollow.Options{Log: logr.Discard()}); err != nil {
		t.Fatal(err)
	}
	shared, err := sharedVIP(f)
	if err != nil {
		t.Fatal(err)
	}

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
	loops.Go(func() { playNamespaceController(ctx, c, cs, t.Logf) })

	var (
		mu      sync.Mutex
		results []result
	)
	runTest := os.Getenv("CONFORMANCE_RUN_TEST")
	opts := suite.ConformanceOptions{
		ConfigurableOptions: suite.ConfigurableOptions{
			GatewayClassName: gatewayClass,
			// The whole tenant control plane goes when the run ends.
			CleanupBaseResources: false,
			CleanupTestResources: true,
			SupportedFeatures:    claimed,
			ConformanceProfiles:  []suite.ConformanceProfileName{suite.GatewayHTTPConformanceProfileName, suite.GatewayGRPCConformanceProfileName},
			Implementation: confv1.Implementation{
				Organization: "fleetlb", Project: "fleetlb", URL: "https://github.com/fleetlb/fleetlb",
				Version: revision(), Contact: []string{"https://github.com/fleetlb/fleetlb/issues"},
			},
			Mode:          "default",
			TimeoutConfig: timeouts(),
			RunTest:       runTest,
			Debug:         os.Getenv("CONFORMANCE_DEBUG") != "",
		},
		Client:        c,
		ClientOptions: client.Options{Scheme: scheme},
		Clientset:     cs,
		RoundTripper:  &roundtripper.DefaultRoundTripper{TimeoutConfig: timeouts(), CustomDialContext: dialer(shared)},
		GRPCClient:    grpcRemap{shared: shared},
		RestConfig:    rest.CopyConfig(cfg),
		ManifestFS:    []fs.FS{&gwconformance.Manifests},
		Hook: func(t *testing.T, test suite.ConformanceTest, s *suite.ConformanceTestSuite) {
			r := result{name: test.ShortName, features: test.Features}
			switch {
			case !s.SupportedFeatures.HasAll(test.Features...):
				r.result = "not supported"
			case t.Failed():
				r.result, r.why = "fail", cmp.Or(failing[test.ShortName], "unexpected: see the log")
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
	// The ccm creates the GatewayClass when it starts; the suite's check
	// fails at once on NotFound.
	if err := harness.Eventually(60*time.Second, func() error {
		return c.Get(context.Background(), client.ObjectKey{Name: gatewayClass}, &gwv1.GatewayClass{})
	}); err != nil {
		t.Fatalf("GatewayClass %s: %v", gatewayClass, err)
	}
	// The suite's own Setup, in a subtest: its last step waits for every
	// base Gateway to be Programmed and every Pod Ready, and a failure there
	// is reported (and fails the run) without stopping the tests.
	t.Run("Setup", func(t *testing.T) { s.Setup(t, tests.ConformanceTests) })
	t.Run("Conformance", func(t *testing.T) {
		if err := s.Run(t, tests.ConformanceTests); err != nil {
			t.Fatal(err)
		}
	})
	if runTest == "" {
		writeReport(t, s)
	}
	report(t, results, time.Since(start))
}

// reportPath is where make conformance writes the suite's ConformanceReport.
const reportPath = "docs/conformance/gateway-api-v1.6.3-fleetlb-report.yaml"

func writeReport(t *testing.T, s *suite.ConformanceTestSuite) {
	rep, err := s.Report()
	if err != nil {
		t.Fatal(err)
	}
	b, err := yaml.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, reportPath), b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("ConformanceReport written to %s", reportPath)
}

// revision is the commit under test, "-dirty" when the tree has changes.
func revision() string {
	out, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

// startTenant starts a fleet (manager, one proxy) and one tenant with its ccm
// and one node.
func startTenant(t *testing.T) (*harness.Fleet, *harness.Tenant) {
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
	// One address per Gateway: the suite creates a few dozen.
	f, err := h.StartFleet("127.0.90.1-127.0.90.60")
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
	return f, tc
}

// sharedVIP is the fleet's shared HTTP/HTTPS VIP.
func sharedVIP(f *harness.Fleet) (netip.Addr, error) {
	var vip netip.Addr
	err := harness.Eventually(60*time.Second, func() error {
		var pf v1.ProxyFleet
		if err := f.Mgmt.Client.Get(context.Background(), client.ObjectKey{Name: v1.DefaultFleetName}, &pf); err != nil {
			return err
		}
		if len(pf.Status.Addresses) == 0 {
			return fmt.Errorf("fleet %s has no address yet", pf.Name)
		}
		var err error
		vip, err = netip.ParseAddr(string(pf.Status.Addresses[0].IP))
		return err
	})
	return vip, err
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
	t.Logf("Gateway API conformance on fleetlb (%s): pass %d, fail %d, skip %d, not supported %d; wall time %s\n%s",
		gatewayClass, counts["pass"], counts["fail"], counts["skip"], counts["not supported"], wall.Round(time.Second), b.String())
}

func order(r string) int {
	return slices.Index([]string{"pass", "fail", "skip", "not supported"}, r)
}

// remap is where the suite's requests to a Gateway address go. Anything
// outside 127.0.0.0/8 is refused. The fleet's shared HTTP/HTTPS VIP serves
// the listeners' ports 80 and 443 on the fleet's ports (8080 and 8443 in the
// harness), so requests to it are sent there; a Gateway with a VIP of its own
// serves its listeners' ports as they are.
func remap(shared netip.Addr, addr string) (string, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !netip.MustParsePrefix("127.0.0.0/8").Contains(ap.Addr()) {
		return "", fmt.Errorf("conformance: refusing to dial %s outside 127.0.0.0/8", addr)
	}
	port := int(ap.Port())
	if ap.Addr() == shared {
		switch port {
		case 80:
			port = harness.HTTPPort
		case 443:
			port = harness.HTTPSPort
		}
	}
	return net.JoinHostPort(ap.Addr().String(), strconv.Itoa(port)), nil
}

// dialer is the suite's dialer for HTTP requests through a Gateway.
func dialer(shared netip.Addr) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		to, err := remap(shared, addr)
		if err != nil {
			return nil, err
		}
		var d net.Dialer
		return d.DialContext(ctx, network, to)
	}
}

// grpcRemap is the suite's gRPC client with remap: the suite's
// DefaultClient, a new one (one connection) per RPC, as the suite uses when
// given none.
type grpcRemap struct{ shared netip.Addr }

func (g grpcRemap) SendRPC(t *testing.T, address string, expected gwgrpc.ExpectedResponse, timeout time.Duration) (*gwgrpc.Response, error) {
	to, err := remap(g.shared, address)
	if err != nil {
		return nil, err
	}
	c := &gwgrpc.DefaultClient{}
	defer c.Close()
	return c.SendRPC(t, to, expected, timeout)
}

func (grpcRemap) Close() {}
