package certs

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/testcerts"
	"github.com/fleetlb/fleetlb/internal/testenv"
	"github.com/fleetlb/fleetlb/manager/route"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

func routeWith(name string, created time.Time, accepted []v1.Hostname, tls ...v1.RouteTLS) v1.Route {
	rt := v1.Route{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(created)},
		Spec:   v1.RouteSpec{TLS: tls},
		Status: v1.RouteStatus{AcceptedHostnames: accepted}}
	for _, t := range tls {
		rt.Spec.Hostnames = append(rt.Spec.Hostnames, t.Hostnames...)
	}
	return rt
}

func TestWant(t *testing.T) {
	le := &v1.IssuerRef{Kind: "ClusterIssuer", Name: "le"}
	ca := &v1.IssuerRef{Kind: "Issuer", Name: "ca"}
	def := &v1.Tenant{Spec: v1.TenantSpec{DefaultIssuer: &v1.IssuerRef{Kind: "ClusterIssuer", Name: "default"}}}
	t0 := time.Unix(1e9, 0)
	cases := []struct {
		name       string
		routes     []v1.Route
		tenant     *v1.Tenant
		issuer     string // "" when no Certificate is wanted
		dnsNames   []string
		referenced bool
	}{
		{name: "no issuer anywhere", referenced: true,
			routes: []v1.Route{routeWith("r", t0, []v1.Hostname{"a.x"}, v1.RouteTLS{Hostnames: []v1.Hostname{"a.x"}, SecretName: "s"})}},
		{name: "the tenant's default issuer", tenant: def, issuer: "default", dnsNames: []string{"a.x"}, referenced: true,
			routes: []v1.Route{routeWith("r", t0, []v1.Hostname{"a.x"}, v1.RouteTLS{Hostnames: []v1.Hostname{"a.x"}, SecretName: "s"})}},
		{name: "the entry's issuer beats the default", tenant: def, issuer: "le", dnsNames: []string{"a.x"}, referenced: true,
			routes: []v1.Route{routeWith("r", t0, []v1.Hostname{"a.x"}, v1.RouteTLS{Hostnames: []v1.Hostname{"a.x"}, SecretName: "s", Issuer: le})}},
		{name: "refused hostnames are never requested", issuer: "le", dnsNames: []string{"a.x"}, referenced: true,
			routes: []v1.Route{routeWith("r", t0, []v1.Hostname{"a.x"}, v1.RouteTLS{Hostnames: []v1.Hostname{"a.x", "theirs.y"}, SecretName: "s", Issuer: le})}},
		{name: "nothing accepted: no Certificate", referenced: true,
			routes: []v1.Route{routeWith("r", t0, nil, v1.RouteTLS{Hostnames: []v1.Hostname{"a.x"}, SecretName: "s", Issuer: le})}},
		{name: "another Secret name: not referenced",
			routes: []v1.Route{routeWith("r", t0, []v1.Hostname{"a.x"}, v1.RouteTLS{Hostnames: []v1.Hostname{"a.x"}, SecretName: "other", Issuer: le})}},
		{name: "two Routes share the Secret: union of names, the oldest's issuer", issuer: "ca", dnsNames: []string{"a.x", "b.x"}, referenced: true,
			routes: []v1.Route{
				routeWith("young", t0.Add(time.Hour), []v1.Hostname{"b.x"}, v1.RouteTLS{Hostnames: []v1.Hostname{"b.x"}, SecretName: "s", Issuer: le}),
				routeWith("old", t0, []v1.Hostname{"a.x"}, v1.RouteTLS{Hostnames: []v1.Hostname{"a.x"}, SecretName: "s", Issuer: ca}),
			}},
		{name: "a wildcard entry covers the accepted names", issuer: "le", dnsNames: []string{"a.x", "b.x"}, referenced: true,
			routes: []v1.Route{func() v1.Route {
				r := routeWith("r", t0, []v1.Hostname{"b.x", "a.x"}, v1.RouteTLS{Hostnames: []v1.Hostname{"*.x"}, SecretName: "s", Issuer: le})
				r.Spec.Hostnames = []v1.Hostname{"a.x", "b.x"}
				return r
			}()}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, referenced := want(c.routes, c.tenant, "s")
			if referenced != c.referenced {
				t.Errorf("referenced = %v, want %v", referenced, c.referenced)
			}
			switch {
			case c.issuer == "" && req != nil:
				t.Fatalf("wanted a Certificate %+v; want none", req)
			case c.issuer == "":
			case req == nil:
				t.Fatalf("no Certificate; want one from %s", c.issuer)
			case req.issuer.Name != c.issuer || !slices.Equal(req.dnsNames, c.dnsNames):
				t.Fatalf("issuer %s dnsNames %v; want %s %v", req.issuer.Name, req.dnsNames, c.issuer, c.dnsNames)
			}
		})
	}
}

// TestCertificateLifecycle drives the controller against a real API server
// with cert-manager's own Certificate CRD; the test plays cert-manager by
// writing the Secret a Certificate names.
func TestCertificateLifecycle(t *testing.T) {
	env := testenv.Start(t, testenv.Options{ExtraCRDDirs: []string{filepath.Join("testdata", "crds")}})
	ctx := context.Background()
	mgr := env.NewManager(t)
	if err := (&route.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("route")}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ok, err := (&Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("certs"), Log: testr.New(t)}).Setup(ctx, mgr)
	if err != nil || !ok {
		t.Fatalf("Setup = %v, %v; want the controller started", ok, err)
	}
	testenv.Run(t, mgr)

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(env.Client.Create(ctx, &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: v1.ProxyFleetSpec{VIP: "127.0.71.1", Exposure: v1.ExposureNone}}))
	must(env.Client.Create(ctx, &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "a"},
		Spec: v1.TenantSpec{AddressPool: "p", Hostnames: []v1.Hostname{"*.a.example.com"}}}))
	ns := tenant.Namespace("a")
	must(env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	newRoute := func(name string, hosts []v1.Hostname, tls v1.RouteTLS) *v1.Route {
		rt := &v1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: v1.RouteSpec{
			Source:    v1.RouteSource{Kind: v1.SourceIngress, Cluster: "a", Namespace: "default", Name: name, UID: "u-" + name},
			Hostnames: hosts,
			TLS:       []v1.RouteTLS{tls},
			Rules:     []v1.RouteRule{{Backends: []v1.RouteBackend{{ServiceName: "web", NodePort: 30080}}}},
		}}
		must(env.Client.Create(ctx, rt))
		return rt
	}
	certificateIs := func(what, name string, check func(*cmv1.Certificate) error) {
		t.Helper()
		testenv.Eventually(t, what, func() error {
			var c cmv1.Certificate
			err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &c)
			if check == nil {
				if apierrors.IsNotFound(err) {
					return nil
				}
				return fmt.Errorf("Certificate %s still there (%v)", name, err)
			}
			if err != nil {
				return err
			}
			return check(&c)
		})
	}

	// A Route without any issuer, made first: it must never get a Certificate.
	newRoute("plain", []v1.Hostname{"plain.a.example.com"}, v1.RouteTLS{Hostnames: []v1.Hostname{"plain.a.example.com"}, SecretName: "default.plain"})

	// An annotated Ingress's Route, one hostname of which the tenant does not own.
	web := newRoute("web", []v1.Hostname{"www.a.example.com", "www.b.example.org"}, v1.RouteTLS{
		Hostnames: []v1.Hostname{"www.a.example.com", "www.b.example.org"}, SecretName: "default.web-tls",
		Issuer: &v1.IssuerRef{Kind: "ClusterIssuer", Name: "letsencrypt"}})
	certificateIs("a Certificate for the owned hostname only", "default.web-tls", func(c *cmv1.Certificate) error {
		if !slices.Equal(c.Spec.DNSNames, []string{"www.a.example.com"}) || c.Spec.SecretName != "default.web-tls" ||
			c.Spec.IssuerRef.Kind != "ClusterIssuer" || c.Spec.IssuerRef.Name != "letsencrypt" || c.Spec.IssuerRef.Group != "cert-manager.io" {
			return fmt.Errorf("spec %+v", c.Spec)
		}
		if refs := c.OwnerReferences; len(refs) != 1 || refs[0].Kind != "Route" || refs[0].Name != "web" {
			return fmt.Errorf("owner references %v", refs)
		}
		return nil
	})
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "default.plain"}, &cmv1.Certificate{}); !apierrors.IsNotFound(err) {
		t.Fatalf("a Route that names no issuer got a Certificate (%v)", err)
	}

	// Play cert-manager: write the Secret. The Route resolves it.
	ca, err := testcerts.NewCA()
	must(err)
	issued, _, err := ca.Secret(ns, "default.web-tls", "www.a.example.com")
	must(err)
	issued.Annotations = map[string]string{cmv1.CertificateNameKey: "default.web-tls"}
	must(env.Client.Create(ctx, issued))
	testenv.Eventually(t, "the Route serves the issued Secret", func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(web), web); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(web.Status.Conditions, v1.ConditionResolvedRefs); c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("ResolvedRefs %+v", c)
		}
		return nil
	})
	certificateIs("the Certificate stays once issued", "default.web-tls", func(*cmv1.Certificate) error { return nil })

	// The tenant's default issuer now covers the Route that named none...
	var ten v1.Tenant
	must(env.Client.Get(ctx, client.ObjectKey{Name: "a"}, &ten))
	ten.Spec.DefaultIssuer = &v1.IssuerRef{Kind: "Issuer", Name: "tenant-ca"}
	must(env.Client.Update(ctx, &ten))
	certificateIs("the default issuer's Certificate", "default.plain", func(c *cmv1.Certificate) error {
		if c.Spec.IssuerRef.Kind != "Issuer" || c.Spec.IssuerRef.Name != "tenant-ca" || !slices.Equal(c.Spec.DNSNames, []string{"plain.a.example.com"}) {
			return fmt.Errorf("spec %+v", c.Spec)
		}
		return nil
	})
	// ...until the tenant brings its own Secret (a ccm copy): that wins.
	own, _, err := ca.Secret(ns, "default.plain", "plain.a.example.com")
	must(err)
	must(env.Client.Create(ctx, own))
	certificateIs("no Certificate once the tenant brings the Secret", "default.plain", nil)

	// The Ingress goes: its Certificate and the Secret cert-manager wrote go too.
	must(env.Client.Delete(ctx, web))
	certificateIs("Certificate removed with the Route", "default.web-tls", nil)
	testenv.Eventually(t, "issued Secret removed", func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(issued), &corev1.Secret{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(own), &corev1.Secret{}); err != nil {
		t.Fatalf("the tenant's own Secret must stay: %v", err)
	}
}

func TestSkippedWithoutCRD(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	mgr := env.NewManager(t)
	ok, err := (&Reconciler{Client: mgr.GetClient(), Log: testr.New(t)}).Setup(context.Background(), mgr)
	if err != nil || ok {
		t.Fatalf("Setup = %v, %v; want skipped without error", ok, err)
	}
	testenv.Run(t, mgr)
}
