package snapshot

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr/testr"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/envoy/translate"
	"github.com/fleetlb/fleetlb/internal/model"
	"github.com/fleetlb/fleetlb/internal/testenv"
	"github.com/fleetlb/fleetlb/manager/route"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

func selfSigned(t *testing.T, hosts ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: hosts[0]}, DNSNames: hosts,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

var addrEq = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func tlsSecret(t *testing.T, ns, name string, hosts ...string) *corev1.Secret {
	c, k := selfSigned(t, hosts...)
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: c, corev1.TLSPrivateKeyKey: k}}
}

func accepted(rt *v1.Route, hosts ...v1.Hostname) *v1.Route {
	rt.Status.AcceptedHostnames = hosts
	rt.Status.Conditions = []metav1.Condition{{Type: v1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: v1.ReasonAccepted}}
	return rt
}

func pathMatch(typ v1.PathMatchType, p string) v1.RouteMatch {
	return v1.RouteMatch{Path: &v1.PathMatch{Type: typ, Value: p}}
}

// TestRouteModel maps Routes onto the model without a control plane:
// matches, filters and timeouts 1:1, precedence across merged Routes,
// certificates, plain HTTP for an unusable Secret, and group ownership.
func TestRouteModel(t *testing.T) {
	nodes := &v1.TenantNodes{Spec: v1.TenantNodesSpec{Cluster: "cluster-a", Nodes: []v1.TenantNode{
		{Name: "n1", Addresses: []v1.IPAddress{"127.0.1.1"}, Zone: "z1"}, {Name: "n2", Addresses: []v1.IPAddress{"127.0.1.2"}, Zone: "z2"}}}}
	ta := &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: v1.TenantSpec{Group: "g"}}
	tb := &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "b"}, Spec: v1.TenantSpec{Group: "g"}}
	tc := &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "c"}}
	good := tlsSecret(t, "tenant-a", "good", "app.example.com")
	secrets := map[string]*corev1.Secret{"good": good,
		"opaque": {ObjectMeta: metav1.ObjectMeta{Name: "opaque"}, Type: corev1.SecretTypeOpaque}}
	lookup := func(name string) *corev1.Secret { return secrets[name] }
	src := v1.RouteSource{Kind: v1.SourceHTTPRoute, Cluster: "cluster-a", Namespace: "web", Name: "r", UID: "u"}

	ra := accepted(&v1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: "ra", Generation: 1}, Spec: v1.RouteSpec{
		Source:    src,
		Hostnames: []v1.Hostname{"app.example.com", "plain.example.com", "pending.example.com"},
		TLS: []v1.RouteTLS{
			{Hostnames: []v1.Hostname{"app.example.com"}, SecretName: "good"},
			{Hostnames: []v1.Hostname{"plain.example.com"}, SecretName: "opaque"},
		},
		Rules: []v1.RouteRule{
			{ // 0: prefix with rewrite, headers, timeouts, two weighted backends (one at 0)
				Matches: []v1.RouteMatch{{Path: &v1.PathMatch{Type: v1.PathPrefix, Value: "/api"}, Method: "GET",
					Headers:     []v1.HeaderMatch{{Name: "x-env", Value: "canary"}},
					QueryParams: []v1.HeaderMatch{{Name: "v", Type: v1.MatchRegularExpression, Value: "[0-9]+"}}}},
				Backends: []v1.RouteBackend{{ServiceName: "api", NodePort: 30001, Weight: ptr.To[int32](3), Protocol: v1.BackendHTTP2},
					{ServiceName: "old", NodePort: 30009, Weight: ptr.To[int32](0)}},
				Filters: []v1.RouteFilter{
					{Type: v1.FilterURLRewrite, URLRewrite: &v1.URLRewrite{Hostname: "internal", Path: &v1.PathModifier{Type: v1.ReplacePrefixMatch, Value: "/"}}},
					{Type: v1.FilterRequestHeaderModifier, RequestHeaderModifier: &v1.HeaderModifier{Set: []v1.HTTPHeader{{Name: "x-a", Value: "1"}}, Remove: []string{"x-b"}}},
					{Type: v1.FilterResponseHeaderModifier, ResponseHeaderModifier: &v1.HeaderModifier{Add: []v1.HTTPHeader{{Name: "x-c", Value: "2"}}}},
				},
				Timeouts: &v1.RouteTimeouts{Request: &metav1.Duration{Duration: 5 * time.Second}, BackendRequest: &metav1.Duration{Duration: time.Second}},
			},
			{ // 1: exact redirect
				Matches: []v1.RouteMatch{pathMatch(v1.PathExact, "/login")},
				Filters: []v1.RouteFilter{{Type: v1.FilterRequestRedirect, RequestRedirect: &v1.RequestRedirect{Scheme: "https", Port: ptr.To[v1.PortNumber](8443), StatusCode: 301,
					Path: &v1.PathModifier{Type: v1.ReplaceFullPath, Value: "/auth"}}}},
			},
			{ // 2: invalid backend, left out
				Backends: []v1.RouteBackend{{ServiceName: "dead", NodePort: 30003, Weight: ptr.To[int32](0)}},
			},
			{ // 3: everything else
				Backends: []v1.RouteBackend{{ServiceName: "web", NodePort: 30002, Protocol: v1.BackendGRPC}},
			},
		},
	}}, "app.example.com", "plain.example.com") // pending.example.com not admitted yet
	rb := accepted(&v1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-b", Name: "rb"}, Spec: v1.RouteSpec{
		Source: src, Hostnames: []v1.Hostname{"app.example.com"},
		Rules: []v1.RouteRule{{Matches: []v1.RouteMatch{pathMatch(v1.PathPrefix, "/api/v2")}, Backends: []v1.RouteBackend{{ServiceName: "api", NodePort: 31001}}},
			{Backends: []v1.RouteBackend{{ServiceName: "web", NodePort: 31002}}}},
	}}, "app.example.com")
	rc := accepted(&v1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-c", Name: "rc"}, Spec: v1.RouteSpec{
		Source: src, Hostnames: []v1.Hostname{"app.example.com"},
		Rules: []v1.RouteRule{{Backends: []v1.RouteBackend{{ServiceName: "x", NodePort: 32000}}}},
	}}, "app.example.com") // stale status: c is outside a's group

	a := fromRoute(ta, ra, nodes, lookup)
	b := fromRoute(tb, rb, &v1.TenantNodes{Spec: v1.TenantNodesSpec{Cluster: "cluster-b"}}, func(string) *corev1.Secret { return nil })
	c := fromRoute(tc, rc, &v1.TenantNodes{}, func(string) *corev1.Secret { return nil })

	if got := []string{a.hosts[0].hostname, a.hosts[0].cert, a.hosts[1].hostname, a.hosts[1].cert}; !slices.Equal(got,
		[]string{"app.example.com", "a/tenant-a/good", "plain.example.com", ""}) || len(a.hosts) != 2 {
		t.Fatalf("hosts %v", got)
	}
	if len(a.certs) != 1 || a.certs[0].CertPEM != string(good.Data["tls.crt"]) || a.certs[0].KeyPEM != string(good.Data["tls.key"]) {
		t.Fatalf("certificates %+v", a.certs)
	}
	wantBackends := []model.Backend{
		{Name: "a/ra/http2/30001", Protocol: model.BackendHTTP2, HealthCheck: &model.HealthCheck{Type: model.HealthTCP}, Groups: []model.EndpointGroup{
			{Cluster: "cluster-a", Zone: "z1", Endpoints: []model.Endpoint{{Address: netip.MustParseAddr("127.0.1.1"), Port: 30001}}},
			{Cluster: "cluster-a", Zone: "z2", Endpoints: []model.Endpoint{{Address: netip.MustParseAddr("127.0.1.2"), Port: 30001}}}}},
		{Name: "a/ra/grpc/30002", Protocol: model.BackendGRPC, HealthCheck: &model.HealthCheck{Type: model.HealthTCP}, Groups: []model.EndpointGroup{
			{Cluster: "cluster-a", Zone: "z1", Endpoints: []model.Endpoint{{Address: netip.MustParseAddr("127.0.1.1"), Port: 30002}}},
			{Cluster: "cluster-a", Zone: "z2", Endpoints: []model.Endpoint{{Address: netip.MustParseAddr("127.0.1.2"), Port: 30002}}}}},
	}
	if d := cmp.Diff(wantBackends, a.backends, addrEq); d != "" {
		t.Fatalf("backends (-want +got):\n%s", d)
	}

	httpL := &model.SharedListener{VIP: netip.MustParseAddr("127.0.60.1"), Port: 80}
	httpsL := &model.SharedListener{VIP: netip.MustParseAddr("127.0.60.1"), Port: 443}
	vhosts, global := virtualHosts([]*admittedRoute{&a, &b, &c}, httpL, httpsL)
	if len(global) != 0 {
		t.Errorf("global backends %+v for distinct matches", global)
	}
	api := &model.Forward{Backends: []model.WeightedBackend{{Backend: "a/ra/http2/30001", Weight: 3}},
		RewriteHost: "internal", RewritePrefixPath: "/",
		RequestHeaders:  model.HeaderChanges{Set: []model.Header{{Name: "x-a", Value: "1"}}, Remove: []string{"x-b"}},
		ResponseHeaders: model.HeaderChanges{Add: []model.Header{{Name: "x-c", Value: "2"}}},
		Timeout:         model.Duration(5 * time.Second), BackendTimeout: model.Duration(time.Second)}
	apiMatch := model.Match{PathType: model.PathPrefix, Path: "/api", Method: "GET",
		Headers: []model.StringMatch{{Name: "x-env", Type: model.StringExact, Value: "canary"}},
		Query:   []model.StringMatch{{Name: "v", Type: model.StringRegex, Value: "[0-9]+"}}}
	login := model.Route{Name: "a/ra/1/0", Match: model.Match{PathType: model.PathExact, Path: "/login"},
		Redirect: &model.Redirect{Scheme: "https", Port: 8443, FullPath: "/auth", StatusCode: 301}}
	web := model.Route{Name: "a/ra/3/0", Match: model.Match{PathType: model.PathPrefix, Path: "/"},
		Forward: &model.Forward{Backends: []model.WeightedBackend{{Backend: "a/ra/grpc/30002", Weight: 1}}}}
	want := []model.VirtualHost{
		{Name: "app.example.com", Hostnames: []string{"app.example.com"}, Certificate: "a/tenant-a/good", Routes: []model.Route{
			login, // exact first
			{Name: "b/rb/0/0", Match: model.Match{PathType: model.PathPrefix, Path: "/api/v2"}, // the longer prefix, from the other cluster
				Forward: &model.Forward{Backends: []model.WeightedBackend{{Backend: "b/rb/http/31001", Weight: 1}}}},
			{Name: "a/ra/0/0", Match: apiMatch, Forward: api},
			// "/" of both clusters is one route (a's, the older); their backends
			// speak different protocols, so they are shared by weight, equally.
			{Name: "a/ra/3/0", Match: model.Match{PathType: model.PathPrefix, Path: "/"},
				Forward: &model.Forward{Backends: []model.WeightedBackend{{Backend: "a/ra/grpc/30002", Weight: 1000}, {Backend: "b/rb/http/31002", Weight: 1000}}}},
		}},
		{Name: "plain.example.com", Hostnames: []string{"plain.example.com"}, Routes: []model.Route{login, {Name: "a/ra/0/0", Match: apiMatch, Forward: api}, web}},
	}
	if d := cmp.Diff(want, vhosts, addrEq); d != "" {
		t.Fatalf("virtual hosts (-want +got):\n%s", d)
	}

	// The model translates, with one HTTPS filter chain for the certificate.
	f := &model.Fleet{Name: "f", HTTP: httpL, HTTPS: httpsL, VirtualHosts: vhosts, Certificates: a.certs,
		Backends: append(append(slices.Clone(a.backends), b.backends...), c.backends...)}
	slices.SortFunc(f.Backends, func(x, y model.Backend) int { return strings.Compare(x.Name, y.Name) })
	out, err := translate.Translate(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Secrets) != 1 {
		t.Fatalf("%d secrets", len(out.Secrets))
	}

	// Without an HTTPS listener the certificate is dropped; without HTTP, plain hosts are.
	if v, _ := virtualHosts([]*admittedRoute{&a}, httpL, nil); v[0].Certificate != "" {
		t.Errorf("certificate kept without HTTPS: %+v", v[0])
	}
	if v, _ := virtualHosts([]*admittedRoute{&a}, nil, httpsL); len(v) != 1 || v[0].Name != "app.example.com" {
		t.Errorf("without HTTP: %+v", v)
	}
}

// recorder is the xDS server as the builder sees it: it keeps the resources
// it was given and acknowledges when the test says so.
type recorder struct {
	mu    sync.Mutex
	gen   uint64
	acked uint64
	res   map[resource.Type][]cachetypes.Resource
	onAck []func(string, uint64)
}

func (r *recorder) Set(fleet string, res map[resource.Type][]cachetypes.Resource) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gen++
	r.res = res
	return r.gen
}

func (r *recorder) OnAcked(f func(string, uint64)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.onAck = append(r.onAck, f)
}

func (r *recorder) AckedGeneration(string) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.acked
}

// ack acknowledges everything Set so far.
func (r *recorder) ack(fleet string) {
	r.mu.Lock()
	r.acked = r.gen
	fns, gen := slices.Clone(r.onAck), r.gen
	r.mu.Unlock()
	for _, f := range fns {
		f(fleet, gen)
	}
}

func (r *recorder) listener(t *testing.T, name string) *listenerv3.Listener {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.res[resource.ListenerType] {
		if l := l.(*listenerv3.Listener); l.Name == name {
			return l
		}
	}
	return nil
}

// localities lists a cluster's endpoints as region/priority/weight/address.
func (r *recorder) localities(t *testing.T, cluster string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, x := range r.res[resource.EndpointType] {
		cla := x.(*endpointv3.ClusterLoadAssignment)
		if cla.ClusterName != cluster {
			continue
		}
		for _, l := range cla.Endpoints {
			for _, e := range l.LbEndpoints {
				sa := e.GetEndpoint().Address.GetSocketAddress()
				out = append(out, fmt.Sprintf("%s/%d/%d/%s:%d", l.Locality.Region, l.Priority, l.LoadBalancingWeight.GetValue(), sa.Address, sa.GetPortValue()))
			}
		}
	}
	return out
}

func (r *recorder) names(typ resource.Type) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, x := range r.res[typ] {
		out = append(out, cachev3.GetResourceName(x))
	}
	return out
}

// TestRoutesServedAndProgrammed runs admission and the builder against a real
// apiserver: two tenants of one group share a hostname (one virtual host with
// both clusters' routes), a third tenant's hostname is served over plain HTTP
// until its Secret appears, and every Route is Programmed after the ACK.
func TestRoutesServedAndProgrammed(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	ctx := context.Background()
	mgr := env.NewManager(t)
	xds := &recorder{}
	b := &Builder{Client: mgr.GetClient(), XDS: xds, Log: testr.New(t), BackendDeny: testDeny}
	if err := b.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	if err := (&route.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("route")}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, mgr)

	const fleet = "web"
	if err := env.Client.Create(ctx, &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: fleet}, Spec: v1.ProxyFleetSpec{
		VIP: "127.0.60.1", Exposure: v1.ExposureNone, HTTP: &v1.FleetListener{Port: 8080}, HTTPS: &v1.FleetListener{Port: 8443}}}); err != nil {
		t.Fatal(err)
	}
	mk := func(name, group, cluster, nodeIP string, hostnames ...v1.Hostname) string {
		if err := env.Client.Create(ctx, &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: v1.TenantSpec{AddressPool: "p", Fleet: fleet, Group: group, Hostnames: hostnames, NodeCIDRs: testNodeCIDRs}}); err != nil {
			t.Fatal(err)
		}
		ns := tenant.Namespace(name)
		if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
		if err := env.Client.Create(ctx, &v1.TenantNodes{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: v1.TenantNodesName},
			Spec: v1.TenantNodesSpec{Cluster: cluster, Nodes: []v1.TenantNode{{Name: "n1", Addresses: []v1.IPAddress{v1.IPAddress(nodeIP)}}}}}); err != nil {
			t.Fatal(err)
		}
		return ns
	}
	nsA := mk("ga", "team", "cluster-a", "127.0.1.1", "*.team.example.com")
	nsB := mk("gb", "team", "cluster-b", "127.0.2.1", "*.team.example.com")
	nsC := mk("tc", "", "cluster-c", "127.0.3.1", "*.c.example.com")
	if err := env.Client.Create(ctx, tlsSecret(t, nsA, "app-cert", "app.team.example.com")); err != nil {
		t.Fatal(err)
	}
	mkRoute := func(ns, name string, host v1.Hostname, secret string, nodePort int32) {
		rt := &v1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: v1.RouteSpec{
			Source:    v1.RouteSource{Kind: v1.SourceIngress, Cluster: "c", Namespace: "default", Name: name, UID: "u"},
			Hostnames: []v1.Hostname{host},
			Rules:     []v1.RouteRule{{Backends: []v1.RouteBackend{{ServiceName: "web", NodePort: v1.PortNumber(nodePort)}}}},
		}}
		if secret != "" {
			rt.Spec.TLS = []v1.RouteTLS{{Hostnames: []v1.Hostname{host}, SecretName: secret}}
		}
		if err := env.Client.Create(ctx, rt); err != nil {
			t.Fatal(err)
		}
	}
	mkRoute(nsA, "app", "app.team.example.com", "app-cert", 30080)
	time.Sleep(1100 * time.Millisecond) // a's Route is the older one
	mkRoute(nsB, "app", "app.team.example.com", "", 31080)
	mkRoute(nsC, "shop", "shop.c.example.com", "shop-cert", 32080)

	last := func() *model.Fleet {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.last[fleet]
	}
	testenv.Eventually(t, "virtual hosts", func() error {
		f := last()
		if f == nil || len(f.VirtualHosts) != 2 {
			return fmt.Errorf("model %+v", f)
		}
		app, shop := f.VirtualHosts[0], f.VirtualHosts[1]
		var routes []string
		for _, r := range app.Routes {
			routes = append(routes, r.Name+">"+r.Forward.Backends[0].Backend)
		}
		// Both clusters serve "/": one route to one global backend.
		if want := []string{"ga/app/0/0>global/app.team.example.com/ga/app/0/0"}; app.Name != "app.team.example.com" ||
			app.Certificate != "ga/tenant-ga/app-cert" || !slices.Equal(routes, want) {
			return fmt.Errorf("app %s cert %q routes %v, want %v", app.Name, app.Certificate, routes, want)
		}
		if shop.Name != "shop.c.example.com" || shop.Certificate != "" {
			return fmt.Errorf("shop %+v, want HTTP only", shop)
		}
		if f.HTTP == nil || f.HTTP.VIP.String() != "127.0.60.1" || f.HTTP.Port != 8080 || f.HTTPS == nil || f.HTTPS.Port != 8443 {
			return fmt.Errorf("listeners %+v %+v", f.HTTP, f.HTTPS)
		}
		return nil
	})
	if got := xds.names(resource.ClusterType); !slices.Equal(got, []string{"global/app.team.example.com/ga/app/0/0", "tc/shop/http/32080"}) {
		t.Errorf("clusters %v", got)
	}
	if got := xds.localities(t, "global/app.team.example.com/ga/app/0/0"); !slices.Equal(got, []string{"cluster-a/0/120/127.0.1.1:30080", "cluster-b/0/120/127.0.2.1:31080"}) {
		t.Errorf("global endpoints %v", got)
	}
	if got := xds.names(resource.SecretType); !slices.Equal(got, []string{"ga/tenant-ga/app-cert"}) {
		t.Errorf("secrets %v", got)
	}
	if l := xds.listener(t, translate.HTTPSListenerName); l == nil || len(l.FilterChains) != 1 ||
		!slices.Equal(l.FilterChains[0].FilterChainMatch.ServerNames, []string{"app.team.example.com"}) {
		t.Fatalf("https listener %v", l)
	}

	programmed := func(ns, name string, status metav1.ConditionStatus, reason string) {
		t.Helper()
		testenv.Eventually(t, ns+"/"+name+" Programmed "+reason, func() error {
			var rt v1.Route
			if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &rt); err != nil {
				return err
			}
			c := meta.FindStatusCondition(rt.Status.Conditions, v1.ConditionProgrammed)
			if c == nil || c.Status != status || c.Reason != reason || c.ObservedGeneration != rt.Generation {
				return fmt.Errorf("%+v", c)
			}
			if !meta.IsStatusConditionTrue(rt.Status.Conditions, v1.ConditionAccepted) {
				return fmt.Errorf("Accepted lost: %+v", rt.Status.Conditions)
			}
			return nil
		})
	}
	programmed(nsA, "app", metav1.ConditionFalse, v1.ReasonPending)
	xds.ack(fleet)
	for _, o := range [][2]string{{nsA, "app"}, {nsB, "app"}, {nsC, "shop"}} {
		programmed(o[0], o[1], metav1.ConditionTrue, v1.ReasonProgrammed)
	}

	// A LoadBalancer on the shared HTTP listener's VIP and port (only a
	// broken IPAM could do that) is refused on its own; the routes stay.
	lb := &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: nsC, Name: "clash"}, Spec: v1.LoadBalancerSpec{
		Source: v1.ServiceSource{Cluster: "cluster-c", Namespace: "default", Name: "clash", UID: "u"},
		Ports:  []v1.LoadBalancerPort{{Port: 8080, Protocol: v1.ProtocolTCP, NodePort: 30099}},
	}}
	if err := env.Client.Create(ctx, lb); err != nil {
		t.Fatal(err)
	}
	lb.Status.Addresses = []v1.Address{{IP: "127.0.60.1", IPMode: v1.IPModeProxy}}
	lb.Status.Conditions = []metav1.Condition{{Type: v1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: v1.ReasonAccepted, LastTransitionTime: metav1.Now()}}
	if err := env.Client.Status().Update(ctx, lb); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "clashing LoadBalancer refused", func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(lb), lb); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(lb.Status.Conditions, v1.ConditionProgrammed); c == nil || c.Reason != v1.ReasonInvalidSpec {
			return fmt.Errorf("%+v", c)
		}
		return nil
	})
	if f := last(); len(f.L4) != 0 || len(f.VirtualHosts) != 2 {
		t.Fatalf("fleet L4 %+v, %d virtual hosts", f.L4, len(f.VirtualHosts))
	}

	// c's Secret appears: its hostname moves to HTTPS too.
	if err := env.Client.Create(ctx, tlsSecret(t, nsC, "shop-cert", "shop.c.example.com")); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "shop on HTTPS", func() error {
		if l := xds.listener(t, translate.HTTPSListenerName); l == nil || len(l.FilterChains) != 2 {
			return fmt.Errorf("https listener %v", l)
		}
		return nil
	})
	if got := xds.names(resource.SecretType); !slices.Equal(got, []string{"ga/tenant-ga/app-cert", "tc/tenant-tc/shop-cert"}) {
		t.Errorf("secrets %v", got)
	}

	// a's Route goes away: b serves the hostname alone, over HTTP (its Route names no Secret).
	if err := env.Client.Delete(ctx, &v1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "app"}}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "b alone", func() error {
		f := last()
		if len(f.VirtualHosts) != 2 || f.VirtualHosts[0].Certificate != "" || len(f.VirtualHosts[0].Routes) != 1 || f.VirtualHosts[0].Routes[0].Name != "gb/app/0/0" {
			return fmt.Errorf("%+v", f.VirtualHosts)
		}
		return nil
	})
}

// TestGlobalStrategies: two clusters of one group serve the same hostname
// and match; the global backend spreads by the oldest Route's strategy.
func TestGlobalStrategies(t *testing.T) {
	ta := &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: v1.TenantSpec{Group: "g"}}
	tb := &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "b"}, Spec: v1.TenantSpec{Group: "g"}}
	na := &v1.TenantNodes{Spec: v1.TenantNodesSpec{Cluster: "ca", Nodes: []v1.TenantNode{
		{Name: "n1", Addresses: []v1.IPAddress{"127.0.1.1"}, Zone: "z1"}, {Name: "n2", Addresses: []v1.IPAddress{"127.0.1.2"}, Zone: "z2"}}}}
	nb := &v1.TenantNodes{Spec: v1.TenantNodesSpec{Cluster: "cb", Nodes: []v1.TenantNode{{Name: "n1", Addresses: []v1.IPAddress{"127.0.2.1"}}}}}
	mk := func(ns string, global *v1.GlobalOptions) *v1.Route {
		return accepted(&v1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "r"}, Spec: v1.RouteSpec{
			Source:    v1.RouteSource{Kind: v1.SourceIngress, Cluster: "c", Namespace: "web", Name: "r", UID: "u"},
			Hostnames: []v1.Hostname{"www.example.com"}, Global: global,
			Rules: []v1.RouteRule{{Backends: []v1.RouteBackend{{ServiceName: "web", NodePort: 30080}}}},
		}}, "www.example.com")
	}
	none := func(string) *corev1.Secret { return nil }
	httpL := &model.SharedListener{VIP: netip.MustParseAddr("127.0.60.1"), Port: 80}
	type group struct {
		cluster, zone    string
		priority, weight uint32
	}
	for _, c := range []struct {
		name         string
		ga, gb       *v1.GlobalOptions
		wantWeighted bool
		want         []group
	}{
		{"roundRobin", nil, nil, true, []group{{"ca", "z1", 0, 60}, {"ca", "z2", 0, 60}, {"cb", "", 0, 120}}},
		{"weighted", &v1.GlobalOptions{Strategy: v1.StrategyWeighted, Weight: ptr.To[int32](3)}, &v1.GlobalOptions{Strategy: v1.StrategyWeighted, Weight: ptr.To[int32](1)},
			true, []group{{"ca", "z1", 0, 180}, {"ca", "z2", 0, 180}, {"cb", "", 0, 120}}},
		{"weighted, one drained", &v1.GlobalOptions{Strategy: v1.StrategyWeighted, Weight: ptr.To[int32](0)}, &v1.GlobalOptions{Strategy: v1.StrategyWeighted},
			true, []group{{"cb", "", 0, 120}}},
		{"failover", &v1.GlobalOptions{Strategy: v1.StrategyFailover, Priority: ptr.To[int32](5)}, &v1.GlobalOptions{Strategy: v1.StrategyFailover, Priority: ptr.To[int32](2)},
			false, []group{{"ca", "z1", 1, 0}, {"ca", "z2", 1, 0}, {"cb", "", 0, 0}}},
	} {
		a, b := fromRoute(ta, mk("tenant-a", c.ga), na, none), fromRoute(tb, mk("tenant-b", c.gb), nb, none)
		vhosts, global := virtualHosts([]*admittedRoute{&a, &b}, httpL, nil)
		if len(vhosts) != 1 || len(vhosts[0].Routes) != 1 || len(global) != 1 {
			t.Fatalf("%s: virtual hosts %+v, global %+v", c.name, vhosts, global)
		}
		gb := global[0]
		if r := vhosts[0].Routes[0]; r.Name != "a/r/0/0" || len(r.Forward.Backends) != 1 || r.Forward.Backends[0].Backend != gb.Name || gb.Name != "global/www.example.com/a/r/0/0" {
			t.Errorf("%s: route %+v → %s", c.name, r, gb.Name)
		}
		var got []group
		for _, g := range gb.Groups {
			got = append(got, group{g.Cluster, g.Zone, g.Priority, g.Weight})
		}
		if !slices.Equal(got, c.want) || gb.LocalityWeighted != c.wantWeighted {
			t.Errorf("%s: groups %v (locality weighted %v), want %v (%v)", c.name, got, gb.LocalityWeighted, c.want, c.wantWeighted)
		}
		f := &model.Fleet{Name: "f", HTTP: httpL, VirtualHosts: vhosts, Backends: global}
		if _, err := translate.Translate(f); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

// TestWildcardHostname: a wildcard hostname is its own virtual host and its
// certificate is chosen by a wildcard SNI name.
func TestWildcardHostname(t *testing.T) {
	ta := &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "a"}}
	sec := tlsSecret(t, "tenant-a", "wild", "*.w.example.com")
	rt := accepted(&v1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: "r"}, Spec: v1.RouteSpec{
		Source:    v1.RouteSource{Kind: v1.SourceIngress, Cluster: "c", Namespace: "web", Name: "r", UID: "u"},
		Hostnames: []v1.Hostname{"*.w.example.com", "exact.w.example.com"},
		TLS:       []v1.RouteTLS{{Hostnames: []v1.Hostname{"*.w.example.com"}, SecretName: "wild"}},
		Rules:     []v1.RouteRule{{Backends: []v1.RouteBackend{{ServiceName: "web", NodePort: 30080}}}},
	}}, "*.w.example.com", "exact.w.example.com")
	a := fromRoute(ta, rt, &v1.TenantNodes{}, func(string) *corev1.Secret { return sec })
	vip := netip.MustParseAddr("127.0.60.1")
	vhosts, _ := virtualHosts([]*admittedRoute{&a}, &model.SharedListener{VIP: vip, Port: 80}, &model.SharedListener{VIP: vip, Port: 443})
	if len(vhosts) != 2 || vhosts[0].Name != "*.w.example.com" || vhosts[0].Certificate != "a/tenant-a/wild" || vhosts[1].Certificate != "a/tenant-a/wild" {
		t.Fatalf("virtual hosts %+v", vhosts)
	}
	out, err := translate.Translate(&model.Fleet{Name: "f", HTTP: &model.SharedListener{VIP: vip, Port: 80}, HTTPS: &model.SharedListener{VIP: vip, Port: 443},
		VirtualHosts: vhosts, Certificates: a.certs, Backends: a.backends})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range out.Listeners {
		if l := l.(*listenerv3.Listener); l.Name == translate.HTTPSListenerName {
			if got := l.FilterChains[0].FilterChainMatch.ServerNames; !slices.Equal(got, []string{"*.w.example.com", "exact.w.example.com"}) {
				t.Errorf("server names %v", got)
			}
		}
	}
}

// A rule whose header modifier sets Host would make every proxy refuse the
// one shared route configuration. It is left out of the model (admission
// reports it on the Route); the Route's other rules, and every other tenant's
// virtual hosts, are served.
func TestHostHeaderRuleIsLeftOutNotTheFleet(t *testing.T) {
	nodes := &v1.TenantNodes{Spec: v1.TenantNodesSpec{Cluster: "c", Nodes: []v1.TenantNode{{Name: "n1", Addresses: []v1.IPAddress{"127.0.1.1"}}}}}
	src := v1.RouteSource{Kind: v1.SourceHTTPRoute, Cluster: "c", Namespace: "web", Name: "r", UID: "u"}
	mk := func(tn, name string, host v1.Hostname, rules ...v1.RouteRule) *admittedRoute {
		rt := accepted(&v1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-" + tn, Name: name},
			Spec: v1.RouteSpec{Source: src, Hostnames: []v1.Hostname{host}, Rules: rules}}, host)
		a := fromRoute(&v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: tn}}, rt, nodes, func(string) *corev1.Secret { return nil })
		return &a
	}
	hostile := mk("evil", "r", "evil.example.com",
		v1.RouteRule{Matches: []v1.RouteMatch{pathMatch(v1.PathPrefix, "/x")}, Backends: []v1.RouteBackend{{NodePort: 30001}},
			Filters: []v1.RouteFilter{{Type: v1.FilterRequestHeaderModifier, RequestHeaderModifier: &v1.HeaderModifier{
				Set: []v1.HTTPHeader{{Name: "Host", Value: "victim.example.com"}}}}}},
		v1.RouteRule{Backends: []v1.RouteBackend{{NodePort: 30002}}})
	victim := mk("victim", "r", "victim.example.com", v1.RouteRule{Backends: []v1.RouteBackend{{NodePort: 30003}}})
	httpL := &model.SharedListener{VIP: netip.MustParseAddr("127.0.20.1"), Port: 8080}
	f := assemble("default", httpL, nil, []*admittedRoute{hostile, victim}, nil)
	if _, err := translate.Translate(f); err != nil {
		t.Fatalf("the fleet does not translate: %v", err)
	}
	var routes []string
	for _, v := range f.VirtualHosts {
		for _, r := range v.Routes {
			routes = append(routes, v.Name+" "+r.Name)
		}
	}
	if want := []string{"evil.example.com evil/r/1/0", "victim.example.com victim/r/0/0"}; !slices.Equal(routes, want) {
		t.Fatalf("routes %v, want %v", routes, want)
	}
}
