package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/ccm/nodes"
	"github.com/fleetlb/fleetlb/ccm/service"
	"github.com/fleetlb/fleetlb/e2e/harness"
	"github.com/fleetlb/fleetlb/internal/pki"
	"github.com/fleetlb/fleetlb/internal/scheme"
	"github.com/fleetlb/fleetlb/internal/xdstransport"
	"github.com/fleetlb/fleetlb/manager/admission"
	"github.com/fleetlb/fleetlb/manager/tenant"
	"github.com/fleetlb/fleetlb/manager/xdscerts"
)

// managementClientOf is the client a tenant's ccm has: the kubeconfig the
// manager issued to it, nothing more. A hostile tenant owns this credential.
func managementClientOf(t *testing.T, h *harness.Harness, name string) client.Client {
	t.Helper()
	cfg := check(clientcmd.BuildConfigFromFlags("", filepath.Join(h.Dir, name+"-to-management.kubeconfig")))(t)
	return check(client.New(cfg, client.Options{Scheme: scheme.New()}))(t)
}

// adsResponse opens an ADS stream over conn as a proxy of cluster and asks for
// every TLS secret; it returns how many resources came back, or why none did.
func adsResponse(conn *grpc.ClientConn, cluster string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return 0, err
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "rogue", Cluster: cluster}, TypeUrl: resource.ListenerType}); err != nil {
		return 0, err
	}
	resp, err := st.Recv()
	if err != nil {
		return 0, err
	}
	return len(resp.Resources), nil
}

func dialXDS(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	conn := check(grpc.NewClient(addr, xdstransport.DialOptions(creds)...))(t)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// refusedBy checks that a write failed with Forbidden or Invalid (an
// admission policy or the API's validation) and that the message says why.
func refusedBy(t *testing.T, what string, err error, because string) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s was allowed", what)
	case !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err):
		t.Errorf("%s: %v, want Forbidden or Invalid", what, err)
	case !strings.Contains(err.Error(), because):
		t.Errorf("%s refused with %q, which does not say %q", what, err, because)
	}
}

// conditionOf waits for a condition of a management object in the tenant's
// namespace, read with the tenant's own credentials, with the given reason.
func conditionOf(t *testing.T, c client.Client, obj client.Object, cond, reason string) metav1.Condition {
	t.Helper()
	var got metav1.Condition
	eventually(t, fmt.Sprintf("%s %s=%s", obj.GetName(), cond, reason), 60*time.Second, func() error {
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		var conds []metav1.Condition
		switch o := obj.(type) {
		case *v1.LoadBalancer:
			conds = o.Status.Conditions
		case *v1.Route:
			conds = o.Status.Conditions
		}
		cur := meta.FindStatusCondition(conds, cond)
		if cur == nil || cur.Reason != reason {
			return fmt.Errorf("conditions %+v", conds)
		}
		got = *cur
		return nil
	})
	return got
}

// TestTenantIsolation drives a hostile tenant ("evil") with its real
// management kubeconfig, its own cluster and a rogue xDS client through the
// attacks of DESIGN §9, while a victim tenant's traffic flows through the
// same fleet. Every attack is refused with a reason the attacker can read;
// the victim loses no connection, and a change it makes after the attacks
// is served as usual.
func TestTenantIsolation(t *testing.T) {
	h := newHarness(t)
	f := check(h.StartFleetWith(harness.FleetOptions{AddressQuarantine: 10 * time.Minute}, "127.0.90.1-127.0.90.14"))(t)
	check(f.StartProxy(true))(t)
	victim := check(f.AddTenantWith("victim", v1.TenantSpec{AddressPool: "vips", NodeCIDRs: []v1.CIDR{"127.0.91.0/24"},
		Hostnames: []v1.Hostname{"*.victim.example.com", "*.shared.example.com"}}))(t)
	evil := check(f.AddTenantWith("evil", v1.TenantSpec{AddressPool: "vips", NodeCIDRs: []v1.CIDR{"127.0.92.0/24"},
		Hostnames: []v1.Hostname{"*.evil.example.com", "*.shared.example.com"}}))(t)
	ctx := context.Background()
	vNodes := map[string]string{"v-1": "127.0.91.1"}
	if err := victim.AddNode("v-1", "127.0.91.1", "z1"); err != nil {
		t.Fatal(err)
	}
	if err := evil.AddNode("e-1", "127.0.92.1", "z1"); err != nil {
		t.Fatal(err)
	}
	evilMgmt := managementClientOf(t, h, "evil")
	evilNS := tenant.Namespace("evil")

	// The victim: an L4 Service, an Ingress on the shared VIP, and a
	// Service it will delete (its address goes into quarantine).
	if err := victim.Env.Client.Create(ctx, loadBalancerService("db", corev1.ServicePort{Port: 5432, Protocol: corev1.ProtocolTCP})); err != nil {
		t.Fatal(err)
	}
	for _, o := range []client.Object{clusterIPService("shop"), ingressOf("shop", "shop.shared.example.com", "", map[string]string{"/": "shop"}),
		loadBalancerService("old", corev1.ServicePort{Port: 7000, Protocol: corev1.ProtocolTCP})} {
		if err := victim.Env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	dbAddr := netip.AddrPortFrom(waitAddress(t, victim, "db"), 5432).String()
	if err := victim.ServeNodePorts("default", "db", vNodes); err != nil {
		t.Fatal(err)
	}
	serveCompanion(t, victim, "shop", vNodes)
	servedExactlyBy(t, "the victim's db", dbAddr, 60*time.Second, "v-1")
	vip := fleetVIP(t, f)
	httpAddr := netip.AddrPortFrom(vip, harness.HTTPPort).String()
	reaches(t, httpAddr, "http://shop.shared.example.com/", nil, "victim", "default/shop-fleetlb")
	oldVIP := waitAddress(t, victim, "old")

	// The victim's traffic during every attack: a new connection every 100 ms.
	var total, failed atomic.Int64
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for deadline := time.After(10 * time.Minute); ; {
			select {
			case <-stop:
				return
			case <-deadline:
				return
			case <-tick.C:
			}
			total.Add(1)
			if id, err := dialIdentity(dbAddr); err != nil || id.Cluster != "victim" {
				failed.Add(1)
			}
		}
	}()

	t.Run("xDS without a certificate, with a self-made one, or for another fleet", func(t *testing.T) {
		if n, err := adsResponse(dialXDS(t, f.XDSAddr, insecure.NewCredentials()), v1.DefaultFleetName); err == nil {
			t.Errorf("plaintext xDS got %d resources", n)
		}
		rogueCA := check(pki.NewCA("rogue", time.Hour, time.Now()))(t)
		forged := check(check(rogueCA.IssueFleetClient(v1.DefaultFleetName, time.Hour, time.Now()))(t).TLS())(t)
		rogue := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{*forged}, InsecureSkipVerify: true})
		if n, err := adsResponse(dialXDS(t, f.XDSAddr, rogue), v1.DefaultFleetName); err == nil {
			t.Errorf("a certificate from another CA got %d resources", n)
		}
		// Even the fleet's own certificate gets only its own fleet.
		dir := check(f.ProxyCredentials(v1.DefaultFleetName))(t)
		own := xdstransport.ClientCredentials(xdstransport.ClientFiles{CertFile: filepath.Join(dir, corev1.TLSCertKey),
			KeyFile: filepath.Join(dir, corev1.TLSPrivateKeyKey), CAFile: filepath.Join(dir, xdscerts.CAKey), ServerName: "127.0.0.1"})
		if _, err := adsResponse(dialXDS(t, f.XDSAddr, own), "another-fleet"); status.Code(err) != codes.PermissionDenied {
			t.Errorf("a fleet certificate claiming another fleet: %v, want PermissionDenied", err)
		}
		if n, err := adsResponse(dialXDS(t, f.XDSAddr, own), v1.DefaultFleetName); err != nil || n == 0 {
			t.Errorf("the fleet's own certificate: %d resources, %v", n, err)
		}
		// The tenant cannot read the fleet's certificate or the CA.
		for _, name := range []string{xdscerts.ClientSecretName(v1.DefaultFleetName), xdscerts.CASecretName} {
			err := evilMgmt.Get(ctx, client.ObjectKey{Namespace: harness.FleetNamespace, Name: name}, &corev1.Secret{})
			if !apierrors.IsForbidden(err) {
				t.Errorf("tenant reading Secret %s: %v, want Forbidden", name, err)
			}
		}
	})

	t.Run("nodes on loopback, link-local and the victim's node get no traffic", func(t *testing.T) {
		rogue := map[string]string{"e-loopback": "127.0.0.1", "e-metadata": "169.254.169.254", "e-other": "127.0.91.1"}
		for n, ip := range rogue {
			if err := evil.AddNode(n, ip, "z1"); err != nil {
				t.Fatal(err)
			}
		}
		if err := evil.Env.Client.Create(ctx, loadBalancerService("grab", corev1.ServicePort{Port: 6000, Protocol: corev1.ProtocolTCP})); err != nil {
			t.Fatal(err)
		}
		grab := netip.AddrPortFrom(waitAddress(t, evil, "grab"), 6000).String()
		// Backends answer on every address the fleet could be aimed at that
		// exists here: an answer from one of them would name it.
		if err := evil.ServeNodePorts("default", "grab", map[string]string{"e-1": "127.0.92.1", "e-loopback": "127.0.0.1", "e-other": "127.0.91.1"}); err != nil {
			t.Fatal(err)
		}
		servedExactlyBy(t, "the attacker's Service by its own node only", grab, 60*time.Second, "e-1")
		eventually(t, "refusals on the attacker's TenantNodes", 30*time.Second, func() error {
			var tn v1.TenantNodes
			if err := evilMgmt.Get(ctx, client.ObjectKey{Namespace: evilNS, Name: v1.TenantNodesName}, &tn); err != nil {
				return err
			}
			var got []string
			for _, r := range tn.Status.Refused {
				got = append(got, r.Node+"="+r.Reason)
			}
			slices.Sort(got)
			want := []string{"e-loopback=" + v1.RefusedDenied, "e-metadata=" + v1.RefusedDenied, "e-other=" + v1.RefusedOutsideNodeCIDRs}
			if !slices.Equal(got, want) {
				return fmt.Errorf("refused %v, want %v", got, want)
			}
			return nil
		})
		waitEvent(t, evil, "e-other", nodes.ReasonNodeAddressRefused)
	})

	t.Run("two LoadBalancers with one source are both served or refused alone", func(t *testing.T) {
		var grab v1.LoadBalancer
		if err := evilMgmt.Get(ctx, client.ObjectKey{Namespace: evilNS, Name: service.LoadBalancerName("default", "grab")}, &grab); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"twin-1", "twin-2"} {
			twin := &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: evilNS, Name: name}, Spec: *grab.Spec.DeepCopy()}
			if err := evilMgmt.Create(ctx, twin); err != nil {
				t.Fatal(err)
			}
		}
		// Each twin ends admitted on an address of its own; the fleet keeps
		// translating (the victim's change at the end shows it).
		for _, name := range []string{"twin-1", "twin-2"} {
			conditionOf(t, evilMgmt, &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: evilNS, Name: name}}, v1.ConditionProgrammed, v1.ReasonProgrammed)
		}
	})

	t.Run("a Host header modifier is refused on the route, not by the proxy", func(t *testing.T) {
		rt := &v1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: evilNS, Name: "hosty"}, Spec: v1.RouteSpec{
			Source:    v1.RouteSource{Kind: v1.SourceIngress, Cluster: "evil", Namespace: "default", Name: "hosty", UID: "u-hosty"},
			Hostnames: []v1.Hostname{"hosty.evil.example.com"},
			Rules: []v1.RouteRule{{Backends: []v1.RouteBackend{{NodePort: 30999}}, Filters: []v1.RouteFilter{{Type: v1.FilterRequestHeaderModifier,
				RequestHeaderModifier: &v1.HeaderModifier{Set: []v1.HTTPHeader{{Name: "Host", Value: "shop.shared.example.com"}}}}}}},
		}}
		if err := evilMgmt.Create(ctx, rt); err != nil {
			t.Fatal(err)
		}
		c := conditionOf(t, evilMgmt, rt, v1.ConditionAccepted, v1.ReasonInvalidSpec)
		if !strings.Contains(strings.ToLower(c.Message), "host") {
			t.Errorf("refusal %q does not say which header", c.Message)
		}
	})

	t.Run("a route at the API's maxima is refused by the tenant's route-configuration limit", func(t *testing.T) {
		rt := &v1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: evilNS, Name: "huge"}, Spec: v1.RouteSpec{
			Source: v1.RouteSource{Kind: v1.SourceIngress, Cluster: "evil", Namespace: "default", Name: "huge", UID: "u-huge"}}}
		for i := range 64 {
			rt.Spec.Hostnames = append(rt.Spec.Hostnames, v1.Hostname(fmt.Sprintf("h%d.evil.example.com", i)))
		}
		long := strings.Repeat("x", 1000)
		for i := range 16 {
			rule := v1.RouteRule{Backends: []v1.RouteBackend{{NodePort: 30999}}}
			for j := range 16 {
				rule.Matches = append(rule.Matches, v1.RouteMatch{Path: &v1.PathMatch{Type: v1.PathPrefix, Value: fmt.Sprintf("/%d/%d", i, j)},
					Headers: []v1.HeaderMatch{{Name: "x-a", Value: long}, {Name: "x-b", Value: long}, {Name: "x-c", Value: long}}})
			}
			rt.Spec.Rules = append(rt.Spec.Rules, rule)
		}
		if err := evilMgmt.Create(ctx, rt); err != nil {
			t.Fatal(err)
		}
		c := conditionOf(t, evilMgmt, rt, v1.ConditionAccepted, v1.ReasonLimitExceeded)
		if !strings.Contains(c.Message, "maxRouteConfigBytes") {
			t.Errorf("refusal %q does not name the limit", c.Message)
		}
	})

	t.Run("a health check every nanosecond is refused by the API", func(t *testing.T) {
		lb := &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: evilNS, Name: "probe-storm"}, Spec: v1.LoadBalancerSpec{
			Source:      v1.ServiceSource{Cluster: "evil", Namespace: "default", Name: "probe-storm", UID: "u-probe"},
			Ports:       []v1.LoadBalancerPort{{Port: 6001, Protocol: v1.ProtocolTCP, NodePort: 30998}},
			HealthCheck: &v1.HealthCheck{Type: v1.HealthCheckTCP, Interval: &metav1.Duration{Duration: time.Nanosecond}},
		}}
		refusedBy(t, "a 1ns health-check interval", evilMgmt.Create(ctx, lb), "at least 1s")
	})

	t.Run("the tenant cannot strip finalizers, mint tokens or touch its kubeconfig", func(t *testing.T) {
		var grab v1.LoadBalancer
		if err := evilMgmt.Get(ctx, client.ObjectKey{Namespace: evilNS, Name: service.LoadBalancerName("default", "grab")}, &grab); err != nil {
			t.Fatal(err)
		}
		if len(grab.Finalizers) == 0 {
			t.Fatalf("LoadBalancer has no finalizer to protect: %+v", grab.ObjectMeta)
		}
		stripped := grab.DeepCopy()
		stripped.Finalizers = nil
		refusedBy(t, "removing the LoadBalancer's finalizer", evilMgmt.Patch(ctx, stripped, client.MergeFrom(&grab)), "finalizer")

		token := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: evilNS, Name: "forever",
			Annotations: map[string]string{corev1.ServiceAccountNameKey: tenant.CCMName}}, Type: corev1.SecretTypeServiceAccountToken}
		refusedBy(t, "a service-account-token Secret", evilMgmt.Create(ctx, token), "kubernetes.io/tls")
		opaque := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: evilNS, Name: "opaque"}, Type: corev1.SecretTypeOpaque}
		refusedBy(t, "an Opaque Secret", evilMgmt.Create(ctx, opaque), "kubernetes.io/tls")

		var kc corev1.Secret
		if err := evilMgmt.Get(ctx, client.ObjectKey{Namespace: evilNS, Name: tenant.KubeconfigSecretName}, &kc); err != nil {
			t.Fatal(err)
		}
		changed := kc.DeepCopy()
		changed.Labels = map[string]string{"mine": "now"}
		refusedBy(t, "changing the kubeconfig Secret", evilMgmt.Patch(ctx, changed, client.MergeFrom(&kc)), "kubeconfig")
		refusedBy(t, "deleting the kubeconfig Secret", evilMgmt.Delete(ctx, &kc), "kubeconfig")
	})

	t.Run("a released address waits its quarantine before another tenant gets it", func(t *testing.T) {
		if err := victim.Env.Client.Delete(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "old"}}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the victim's old LoadBalancer gone", 60*time.Second, func() error {
			err := f.Mgmt.Client.Get(ctx, client.ObjectKey{Namespace: tenant.Namespace("victim"), Name: service.LoadBalancerName("default", "old")}, &v1.LoadBalancer{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("still there (%v)", err)
		})
		squat := loadBalancerService("squat", corev1.ServicePort{Port: 7000, Protocol: corev1.ProtocolTCP})
		squat.Annotations = map[string]string{v1.AnnotationLoadBalancerIP: oldVIP.String()}
		if err := evil.Env.Client.Create(ctx, squat); err != nil {
			t.Fatal(err)
		}
		lb := &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: evilNS, Name: service.LoadBalancerName("default", "squat")}}
		c := conditionOf(t, evilMgmt, lb, v1.ConditionAccepted, admission.ReasonAddressQuarantined)
		if len(lb.Status.Addresses) != 0 {
			t.Errorf("the squatter got %v", lb.Status.Addresses)
		}
		if strings.Contains(c.Message, "victim") {
			t.Errorf("refusal names the other tenant: %q", c.Message)
		}
	})

	t.Run("another tenant's hostname is refused without naming it", func(t *testing.T) {
		for _, o := range []client.Object{clusterIPService("shop"), ingressOf("steal", "shop.shared.example.com", "", map[string]string{"/": "shop"}),
			ingressOf("cover", "*.shared.example.com", "", map[string]string{"/": "shop"})} {
			if err := evil.Env.Client.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
		ingressEvent(t, evil, "steal", v1.ReasonHostnameConflict)
		ingressEvent(t, evil, "cover", v1.ReasonHostnameConflict)
		reaches(t, httpAddr, "http://shop.shared.example.com/", nil, "victim", "default/shop-fleetlb")
	})

	t.Run("nothing the attacker can read names the victim", func(t *testing.T) {
		var texts []string
		var lbs v1.LoadBalancerList
		var rts v1.RouteList
		var tns v1.TenantNodesList
		for _, l := range []client.ObjectList{&lbs, &rts, &tns} {
			if err := evilMgmt.List(ctx, l, client.InNamespace(evilNS)); err != nil {
				t.Fatal(err)
			}
		}
		for _, lb := range lbs.Items {
			for _, c := range lb.Status.Conditions {
				texts = append(texts, c.Reason+": "+c.Message)
			}
		}
		for _, rt := range rts.Items {
			for _, c := range rt.Status.Conditions {
				texts = append(texts, c.Reason+": "+c.Message)
			}
		}
		for _, tn := range tns.Items {
			for _, r := range tn.Status.Refused {
				texts = append(texts, r.Reason+": "+r.Message)
			}
		}
		var evs corev1.EventList
		if err := evil.Env.Client.List(ctx, &evs); err != nil {
			t.Fatal(err)
		}
		for _, e := range evs.Items {
			texts = append(texts, e.Reason+": "+e.Message)
		}
		for _, s := range texts {
			if strings.Contains(s, "victim") {
				t.Errorf("the attacker reads %q", s)
			}
		}
		if len(texts) < 5 {
			t.Errorf("only %d messages to read: %v", len(texts), texts)
		}
	})

	// The victim's change made after the attacks is served as usual.
	if err := victim.Env.Client.Create(ctx, loadBalancerService("db2", corev1.ServicePort{Port: 5433, Protocol: corev1.ProtocolTCP})); err != nil {
		t.Fatal(err)
	}
	if err := victim.Env.Client.Create(ctx, ingressOf("new", "new.victim.example.com", "", map[string]string{"/": "shop"})); err != nil {
		t.Fatal(err)
	}
	db2 := netip.AddrPortFrom(waitAddress(t, victim, "db2"), 5433).String()
	if err := victim.ServeNodePorts("default", "db2", vNodes); err != nil {
		t.Fatal(err)
	}
	servedExactlyBy(t, "the victim's new Service", db2, 60*time.Second, "v-1")
	reaches(t, httpAddr, "http://new.victim.example.com/", nil, "victim", "default/shop-fleetlb")

	close(stop)
	<-done
	if failed.Load() > 0 || total.Load() < 10 {
		t.Errorf("the victim's traffic: %d of %d connections failed during the attacks", failed.Load(), total.Load())
	}
	t.Logf("victim traffic during the attacks: %d connections, %d failed", total.Load(), failed.Load())
}

// fleetVIP waits for the default fleet's shared VIP.
func fleetVIP(t *testing.T, f *harness.Fleet) netip.Addr {
	t.Helper()
	var vip netip.Addr
	eventually(t, "the fleet's shared VIP", 60*time.Second, func() error {
		var pf v1.ProxyFleet
		if err := f.Mgmt.Client.Get(context.Background(), client.ObjectKey{Name: v1.DefaultFleetName}, &pf); err != nil {
			return err
		}
		if len(pf.Status.Addresses) != 1 {
			return fmt.Errorf("addresses %+v", pf.Status.Addresses)
		}
		vip = netip.MustParseAddr(string(pf.Status.Addresses[0].IP))
		return nil
	})
	return vip
}
