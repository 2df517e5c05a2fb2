package snapshot

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/envoy/translate"
	"github.com/fleetlb/fleetlb/internal/model"
	"github.com/fleetlb/fleetlb/internal/testenv"
	"github.com/fleetlb/fleetlb/manager/route"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// A Gateway on its own VIP: its listeners are served and Programmed before
// any route; a route without hostnames serves every host of the listeners
// it attaches to and nothing else; another tenant's route naming the same
// Gateway reaches nothing; the shared VIP keeps serving Ingress-style routes.
func TestGatewayOwnVIPListeners(t *testing.T) {
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

	const fleet = "gw"
	if err := env.Client.Create(ctx, &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: fleet}, Spec: v1.ProxyFleetSpec{
		VIP: "127.0.61.1", Exposure: v1.ExposureNone, HTTP: &v1.FleetListener{Port: 8080}, HTTPS: &v1.FleetListener{Port: 8443}}}); err != nil {
		t.Fatal(err)
	}
	mk := func(name, nodeIP string, hostnames ...v1.Hostname) string {
		if err := env.Client.Create(ctx, &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: v1.TenantSpec{AddressPool: "p", Fleet: fleet, Hostnames: hostnames, NodeCIDRs: testNodeCIDRs}}); err != nil {
			t.Fatal(err)
		}
		ns := tenant.Namespace(name)
		if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
		if err := env.Client.Create(ctx, &v1.TenantNodes{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: v1.TenantNodesName},
			Spec: v1.TenantNodesSpec{Cluster: name, Nodes: []v1.TenantNode{{Name: "n1", Addresses: []v1.IPAddress{v1.IPAddress(nodeIP)}}}}}); err != nil {
			t.Fatal(err)
		}
		return ns
	}
	nsA := mk("owner", "127.0.1.1")
	nsB := mk("other", "127.0.2.1", "*.other.example.com")
	if err := env.Client.Create(ctx, tlsSecret(t, nsA, "default.cert", "*.example.com")); err != nil {
		t.Fatal(err)
	}

	// The Gateway's LoadBalancer, as admission leaves it (address from the pool).
	const gwName = "gateway.default.gw"
	lb := &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: gwName}, Spec: v1.LoadBalancerSpec{
		Source: v1.ServiceSource{Kind: v1.SourceGateway, Cluster: "owner", Namespace: "default", Name: "gw", UID: "u"},
		Listeners: []v1.GatewayListener{
			{Name: "http", Port: 80, Protocol: v1.ListenerHTTP},
			{Name: "https", Port: 443, Protocol: v1.ListenerHTTPS, Hostname: "*.example.com", CertificateSecrets: []string{"default.cert"}},
			{Name: "mixed", Port: 80, Protocol: v1.ListenerHTTPS, CertificateSecrets: []string{"default.cert"}}, // conflicts with http: left out
		},
	}}
	if err := env.Client.Create(ctx, lb); err != nil {
		t.Fatal(err)
	}
	lb.Status.Addresses = []v1.Address{{IP: "127.0.62.1", IPMode: v1.IPModeProxy}}
	lb.Status.Conditions = []metav1.Condition{{Type: v1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: v1.ReasonAccepted, LastTransitionTime: metav1.Now()}}
	if err := env.Client.Status().Update(ctx, lb); err != nil {
		t.Fatal(err)
	}
	httpName := translate.GatewayListenerName(model.Ref{Tenant: "owner", Name: gwName}, 80)
	httpsName := translate.GatewayListenerName(model.Ref{Tenant: "owner", Name: gwName}, 443)
	testenv.Eventually(t, "the Gateway's listeners without any route", func() error {
		for _, n := range []string{httpName, httpsName} {
			if l := xds.listener(t, n); l == nil || l.Address.GetSocketAddress().GetAddress() != "127.0.62.1" {
				return fmt.Errorf("listener %s: %v", n, l)
			}
		}
		return nil
	})
	xds.ack(fleet)
	lbProgrammed := func(status metav1.ConditionStatus) error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(lb), lb); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(lb.Status.Conditions, v1.ConditionProgrammed); c == nil || c.Status != status {
			return fmt.Errorf("%+v", c)
		}
		return nil
	}
	testenv.Eventually(t, "Gateway Programmed with no route", func() error { return lbProgrammed(metav1.ConditionTrue) })

	mkRoute := func(ns, name string, parents []v1.RouteParent, hosts []v1.Hostname, nodePort int32) {
		rt := &v1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: v1.RouteSpec{
			Source:    v1.RouteSource{Kind: v1.SourceHTTPRoute, Cluster: "c", Namespace: "default", Name: name, UID: "u"},
			Hostnames: hosts, Parents: parents,
			Rules: []v1.RouteRule{{Backends: []v1.RouteBackend{{ServiceName: "web", NodePort: v1.PortNumber(nodePort)}}}},
		}}
		if err := env.Client.Create(ctx, rt); err != nil {
			t.Fatal(err)
		}
	}
	both := []v1.RouteParent{{LoadBalancer: gwName, Listeners: []string{"http", "https"}}}
	mkRoute(nsA, "any", both, nil, 30080)
	mkRoute(nsA, "shop", both, []v1.Hostname{"shop.example.com"}, 30081)
	// Another tenant names the owner's Gateway: it is not in its namespace.
	mkRoute(nsB, "steal", both, nil, 30082)
	// A rule whose backend is gone answers 500 on the Gateway (Gateway API).
	broken := &v1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "broken"}, Spec: v1.RouteSpec{
		Source:  v1.RouteSource{Kind: v1.SourceHTTPRoute, Cluster: "c", Namespace: "default", Name: "broken", UID: "u"},
		Parents: []v1.RouteParent{{LoadBalancer: gwName, Listeners: []string{"http"}}}, Hostnames: []v1.Hostname{"broken.example.com"},
		Rules: []v1.RouteRule{{Matches: []v1.RouteMatch{{Path: &v1.PathMatch{Type: v1.PathPrefix, Value: "/gone"}}}}},
	}}
	if err := env.Client.Create(ctx, broken); err != nil {
		t.Fatal(err)
	}
	// And serves its own hostname on the shared VIP.
	mkRoute(nsB, "web", nil, []v1.Hostname{"web.other.example.com"}, 30083)

	last := func() *model.Fleet {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.last[fleet]
	}
	vhosts := func(vs []model.VirtualHost) []string {
		var out []string
		for _, v := range vs {
			var rs []string
			for _, r := range v.Routes {
				rs = append(rs, r.Name)
			}
			out = append(out, fmt.Sprintf("%s=%v", v.Name, rs))
		}
		return out
	}
	testenv.Eventually(t, "routes on the Gateway's listeners", func() error {
		f := last()
		if f == nil || len(f.Gateways) != 1 || len(f.Gateways[0].Ports) != 2 {
			return fmt.Errorf("gateways %+v", f)
		}
		g := f.Gateways[0]
		http, https := g.Ports[0], g.Ports[1]
		if want := []string{"*=[owner/any/0/0]", "broken.example.com=[owner/broken/0/0]", "shop.example.com=[owner/shop/0/0]"}; http.Port != 80 || http.Protocol != model.ListenerHTTP ||
			!slices.Equal(vhosts(http.VirtualHosts), want) {
			return fmt.Errorf("http port %d %s %v, want %v", http.Port, http.Protocol, vhosts(http.VirtualHosts), want)
		}
		if len(https.Listeners) != 1 || https.Listeners[0].Certificate != "owner/tenant-owner/default.cert" {
			return fmt.Errorf("https %+v", https)
		}
		// The hostname-less route takes every host of the *.example.com listener.
		if want := []string{"*.example.com=[owner/any/0/0]", "shop.example.com=[owner/shop/0/0]"}; !slices.Equal(vhosts(https.Listeners[0].VirtualHosts), want) {
			return fmt.Errorf("https vhosts %v, want %v", vhosts(https.Listeners[0].VirtualHosts), want)
		}
		if want := []string{"web.other.example.com=[other/web/0/0]"}; !slices.Equal(vhosts(f.VirtualHosts), want) {
			return fmt.Errorf("shared vhosts %v, want %v", vhosts(f.VirtualHosts), want)
		}
		for _, v := range http.VirtualHosts {
			if v.Name == "broken.example.com" && (v.Routes[0].Respond == nil || v.Routes[0].Respond.Status != 500) {
				return fmt.Errorf("the rule without a backend: %+v, want a 500", v.Routes[0])
			}
		}
		return nil
	})
	if got := xds.names(resource.ClusterType); slices.Contains(got, "other/steal/http/30082") {
		t.Errorf("the other tenant's route reached the fleet: clusters %v", got)
	}
	xds.ack(fleet)
	routeProgrammed := func(ns, name string, status metav1.ConditionStatus, reason string) {
		t.Helper()
		testenv.Eventually(t, ns+"/"+name+" Programmed "+reason, func() error {
			var rt v1.Route
			if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &rt); err != nil {
				return err
			}
			c := meta.FindStatusCondition(rt.Status.Conditions, v1.ConditionProgrammed)
			if c == nil || c.Status != status || c.Reason != reason {
				return fmt.Errorf("%+v", c)
			}
			if len(rt.Status.AcceptedHostnames) != 0 && route.OnGateways(&rt) {
				return fmt.Errorf("a Gateway route claims hostnames %v", rt.Status.AcceptedHostnames)
			}
			return nil
		})
	}
	routeProgrammed(nsA, "any", metav1.ConditionTrue, v1.ReasonProgrammed)
	routeProgrammed(nsA, "shop", metav1.ConditionTrue, v1.ReasonProgrammed)
	routeProgrammed(nsB, "web", metav1.ConditionTrue, v1.ReasonProgrammed)
	routeProgrammed(nsB, "steal", metav1.ConditionFalse, v1.ReasonPending)

	// The Gateway's hostname "shop.example.com" claimed nothing: the other
	// tenant's claims are untouched (its tenant may not even hold it).
	var owner v1.Tenant
	if err := env.Client.Get(ctx, client.ObjectKey{Name: "owner"}, &owner); err != nil {
		t.Fatal(err)
	}
	if len(owner.Status.HostnameClaims) != 0 {
		t.Errorf("a Gateway route recorded hostname claims %+v", owner.Status.HostnameClaims)
	}
}
