package route

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/testenv"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	// A fuzzing run (make fuzz) runs only the fuzz target, in several worker
	// processes: none of them needs a control plane.
	flag.Parse()
	if f := flag.Lookup("test.fuzz"); f != nil && f.Value.String() != "" {
		os.Exit(m.Run())
	}
	testenv.Main(m, testenv.Options{}, &env)
}

var seq atomic.Int32

// start runs the admission; grace, when given, is the claim grace period.
func start(t *testing.T, grace ...time.Duration) {
	t.Helper()
	mgr := env.NewManager(t)
	r := &Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("route")}
	if len(grace) > 0 {
		r.ClaimGrace = grace[0]
	}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, mgr)
}

// fixture makes a fleet with a VIP and returns a unique suffix for names.
func fixture(t *testing.T) (fleet, vip, uniq string) {
	t.Helper()
	n := seq.Add(1)
	uniq = fmt.Sprintf("%d-%d", time.Now().UnixNano()%1e6, n)
	fleet, vip = "f-"+uniq, fmt.Sprintf("127.0.50.%d", n)
	if err := env.Client.Create(context.Background(), &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: fleet},
		Spec: v1.ProxyFleetSpec{VIP: v1.IPAddress(vip), Exposure: v1.ExposureNone}}); err != nil {
		t.Fatal(err)
	}
	return fleet, vip, uniq
}

func mkTenant(t *testing.T, name, fleet, group string, limits v1.TenantLimits, hostnames ...v1.Hostname) string {
	t.Helper()
	ctx := context.Background()
	if err := env.Client.Create(ctx, &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1.TenantSpec{AddressPool: "p", Fleet: fleet, Group: group, Hostnames: hostnames, Limits: limits}}); err != nil {
		t.Fatal(err)
	}
	ns := tenant.Namespace(name)
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	return ns
}

func backend(nodePort int32) v1.RouteBackend {
	return v1.RouteBackend{ServiceName: "web", NodePort: v1.PortNumber(nodePort)}
}

func mkRoute(t *testing.T, ns, name string, mutate func(*v1.Route), hostnames ...v1.Hostname) *v1.Route {
	t.Helper()
	rt := &v1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: v1.RouteSpec{
		Source:    v1.RouteSource{Kind: v1.SourceIngress, Cluster: "c", Namespace: "default", Name: name, UID: "u-" + name},
		Hostnames: hostnames,
		Rules:     []v1.RouteRule{{Backends: []v1.RouteBackend{backend(30080)}}},
	}}
	if mutate != nil {
		mutate(rt)
	}
	if err := env.Client.Create(context.Background(), rt); err != nil {
		t.Fatal(err)
	}
	return rt
}

// expect waits until the Route's status for its current generation passes check.
func expect(t *testing.T, ns, name, what string, check func(*v1.Route) error) *v1.Route {
	t.Helper()
	var rt v1.Route
	testenv.Eventually(t, ns+"/"+name+": "+what, func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &rt); err != nil {
			return err
		}
		if rt.Status.ObservedGeneration != rt.Generation {
			return fmt.Errorf("status of generation %d, want %d", rt.Status.ObservedGeneration, rt.Generation)
		}
		return check(&rt)
	})
	return &rt
}

func cond(rt *v1.Route, typ string, status metav1.ConditionStatus, reason string) error {
	c := meta.FindStatusCondition(rt.Status.Conditions, typ)
	if c == nil || c.Status != status || c.Reason != reason || c.ObservedGeneration != rt.Generation {
		return fmt.Errorf("%s condition %+v, want %s %s", typ, c, status, reason)
	}
	return nil
}

func hosts(rt *v1.Route, want ...v1.Hostname) error {
	if !slices.Equal(rt.Status.AcceptedHostnames, want) {
		return fmt.Errorf("accepted hostnames %v, want %v", rt.Status.AcceptedHostnames, want)
	}
	return nil
}

func addr(rt *v1.Route, vip string) error {
	var want []v1.Address
	if vip != "" {
		want = []v1.Address{{IP: v1.IPAddress(vip), IPMode: v1.IPModeProxy}}
	}
	if !slices.Equal(rt.Status.Addresses, want) {
		return fmt.Errorf("addresses %v, want %v", rt.Status.Addresses, want)
	}
	return nil
}

func all(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

func warned(t *testing.T, ns, name, reason string) {
	t.Helper()
	testenv.Eventually(t, "warning event "+reason+" on "+name, func() error {
		var evs eventsv1.EventList
		if err := env.Client.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Regarding.Name == name && e.Type == corev1.EventTypeWarning && e.Reason == reason {
				return nil
			}
		}
		return fmt.Errorf("none among %d events", len(evs.Items))
	})
}

func TestHostnamePatternsConflictsAndReadmission(t *testing.T) {
	start(t, time.Second) // a dropped claim holds for a second
	ctx := context.Background()
	fleet, vip, u := fixture(t)
	shared := v1.Hostname("www.shared-" + u + ".example.com")
	own := v1.Hostname("x.a-" + u + ".example.com")
	nsA := mkTenant(t, "ta-"+u, fleet, "", v1.TenantLimits{}, v1.Hostname("*.a-"+u+".example.com"), shared)
	nsB := mkTenant(t, "tb-"+u, fleet, "", v1.TenantLimits{}, v1.Hostname("*.shared-"+u+".example.com"))

	// a: one allowed by pattern, one exact, one not allowed at all.
	notAllowed := v1.Hostname("evil.other-" + u + ".example.com")
	ra := mkRoute(t, nsA, "ra", nil, own, shared, notAllowed)
	expect(t, nsA, "ra", "partly accepted", func(rt *v1.Route) error {
		return all(cond(rt, v1.ConditionAccepted, metav1.ConditionTrue, v1.ReasonHostnameNotAllowed),
			cond(rt, v1.ConditionResolvedRefs, metav1.ConditionTrue, v1.ReasonResolvedRefs),
			hosts(rt, own, shared), addr(rt, vip))
	})
	warned(t, nsA, "ra", v1.ReasonHostnameNotAllowed)

	// b claims the shared name later: refused, without naming the owner; a keeps it.
	time.Sleep(1100 * time.Millisecond) // creationTimestamp has a resolution of one second
	mkRoute(t, nsB, "rb", nil, shared)
	rb := expect(t, nsB, "rb", "conflict", func(rt *v1.Route) error {
		return all(cond(rt, v1.ConditionAccepted, metav1.ConditionFalse, v1.ReasonHostnameConflict), hosts(rt), addr(rt, ""))
	})
	if c := meta.FindStatusCondition(rb.Status.Conditions, v1.ConditionAccepted); strings.Contains(c.Message, "ta-"+u) {
		t.Errorf("conflict message %q names the owner", c.Message)
	}
	warned(t, nsB, "rb", v1.ReasonHostnameConflict)
	expect(t, nsA, "ra", "still owner", func(rt *v1.Route) error { return hosts(rt, own, shared) })

	// The status is not rewritten when nothing changed: b is reconciled
	// again (a label), and a later Route is admitted after it.
	rb.Labels = map[string]string{"touch": "1"}
	if err := env.Client.Update(ctx, rb); err != nil {
		t.Fatal(err)
	}
	rv := rb.ResourceVersion
	mkRoute(t, nsB, "later", nil, v1.Hostname("later.shared-"+u+".example.com"))
	expect(t, nsB, "later", "admitted", func(rt *v1.Route) error {
		return cond(rt, v1.ConditionAccepted, metav1.ConditionTrue, v1.ReasonAccepted)
	})
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(rb), rb); err != nil || rb.ResourceVersion != rv {
		t.Fatalf("b was rewritten without a change: %s → %s (%v)", rv, rb.ResourceVersion, err)
	}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(ra), ra); err != nil {
		t.Fatal(err)
	}

	// The owner drops the hostname: b is admitted once the claim's grace is over.
	ra.Spec.Hostnames = []v1.Hostname{own}
	if err := env.Client.Update(ctx, ra); err != nil {
		t.Fatal(err)
	}
	expect(t, nsA, "ra", "only its own", func(rt *v1.Route) error {
		return all(cond(rt, v1.ConditionAccepted, metav1.ConditionTrue, v1.ReasonAccepted), hosts(rt, own))
	})
	expect(t, nsB, "rb", "re-admitted", func(rt *v1.Route) error {
		return all(cond(rt, v1.ConditionAccepted, metav1.ConditionTrue, v1.ReasonAccepted), hosts(rt, shared), addr(rt, vip))
	})

	// a claims it again with a new Route: b is older now and keeps it.
	time.Sleep(1100 * time.Millisecond) // newer than b by creationTimestamp
	mkRoute(t, nsA, "ra2", nil, shared)
	expect(t, nsA, "ra2", "conflict", func(rt *v1.Route) error {
		return cond(rt, v1.ConditionAccepted, metav1.ConditionFalse, v1.ReasonHostnameConflict)
	})
	// b is deleted: a's newer Route takes over.
	if err := env.Client.Delete(ctx, rb); err != nil {
		t.Fatal(err)
	}
	expect(t, nsA, "ra2", "re-admitted after delete", func(rt *v1.Route) error {
		return all(cond(rt, v1.ConditionAccepted, metav1.ConditionTrue, v1.ReasonAccepted), hosts(rt, shared))
	})
}

func TestSameGroupSharesHostname(t *testing.T) {
	start(t)
	fleet, vip, u := fixture(t)
	h := v1.Hostname("api.g-" + u + ".example.com")
	pattern := v1.Hostname("*.g-" + u + ".example.com")
	ns1 := mkTenant(t, "g1-"+u, fleet, "team-"+u, v1.TenantLimits{}, pattern)
	ns2 := mkTenant(t, "g2-"+u, fleet, "team-"+u, v1.TenantLimits{}, pattern)
	ns3 := mkTenant(t, "g3-"+u, fleet, "", v1.TenantLimits{}, pattern) // same pattern, no group
	mkRoute(t, ns1, "r", nil, h)
	time.Sleep(1100 * time.Millisecond)
	mkRoute(t, ns2, "r", nil, h)
	mkRoute(t, ns3, "r", nil, h)
	for _, ns := range []string{ns1, ns2} {
		expect(t, ns, "r", "shared", func(rt *v1.Route) error {
			return all(cond(rt, v1.ConditionAccepted, metav1.ConditionTrue, v1.ReasonAccepted), hosts(rt, h), addr(rt, vip))
		})
	}
	expect(t, ns3, "r", "outside the group", func(rt *v1.Route) error {
		return all(cond(rt, v1.ConditionAccepted, metav1.ConditionFalse, v1.ReasonHostnameConflict), hosts(rt))
	})
}

// selfSigned returns a PEM certificate and key for host.
func selfSigned(t *testing.T, host string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
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

func TestSecretsAndBackends(t *testing.T) {
	start(t)
	ctx := context.Background()
	fleet, _, u := fixture(t)
	dom := "s-" + u + ".example.com"
	ns := mkTenant(t, "ts-"+u, fleet, "", v1.TenantLimits{}, v1.Hostname("*."+dom))
	h1, h2 := v1.Hostname("one."+dom), v1.Hostname("two."+dom)

	mkRoute(t, ns, "tls", func(rt *v1.Route) {
		rt.Spec.TLS = []v1.RouteTLS{{Hostnames: []v1.Hostname{h1}, SecretName: "cert"}}
	}, h1, h2)
	expect(t, ns, "tls", "secret not found", func(rt *v1.Route) error {
		return all(cond(rt, v1.ConditionAccepted, metav1.ConditionTrue, v1.ReasonAccepted),
			cond(rt, v1.ConditionResolvedRefs, metav1.ConditionFalse, v1.ReasonSecretNotFound), hosts(rt, h1, h2))
	})
	warned(t, ns, "tls", v1.ReasonSecretNotFound)

	// Present, but not TLS.
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cert"}, Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{"x": []byte("y")}}
	if err := env.Client.Create(ctx, sec); err != nil {
		t.Fatal(err)
	}
	expect(t, ns, "tls", "secret not TLS", func(rt *v1.Route) error {
		return cond(rt, v1.ConditionResolvedRefs, metav1.ConditionFalse, v1.ReasonSecretNotTLS)
	})
	// Secret type is immutable: replace it with a kubernetes.io/tls one.
	if err := env.Client.Delete(ctx, sec); err != nil {
		t.Fatal(err)
	}
	expect(t, ns, "tls", "secret gone", func(rt *v1.Route) error {
		return cond(rt, v1.ConditionResolvedRefs, metav1.ConditionFalse, v1.ReasonSecretNotFound)
	})
	c, k := selfSigned(t, string(h1))
	bad := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cert"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: c, corev1.TLSPrivateKeyKey: []byte("garbage")}}
	if err := env.Client.Create(ctx, bad); err != nil {
		t.Fatal(err)
	}
	expect(t, ns, "tls", "unparseable key", func(rt *v1.Route) error {
		return cond(rt, v1.ConditionResolvedRefs, metav1.ConditionFalse, v1.ReasonSecretNotTLS)
	})
	bad.Data[corev1.TLSPrivateKeyKey] = k
	if err := env.Client.Update(ctx, bad); err != nil {
		t.Fatal(err)
	}
	expect(t, ns, "tls", "resolved", func(rt *v1.Route) error {
		return all(cond(rt, v1.ConditionAccepted, metav1.ConditionTrue, v1.ReasonAccepted),
			cond(rt, v1.ConditionResolvedRefs, metav1.ConditionTrue, v1.ReasonResolvedRefs))
	})

	// A rule whose backends all weigh 0: that rule is reported, the Route stays accepted.
	mkRoute(t, ns, "rules", func(rt *v1.Route) {
		rt.Spec.Rules = append(rt.Spec.Rules, v1.RouteRule{Name: "dead", Backends: []v1.RouteBackend{{ServiceName: "x", NodePort: 30081, Weight: ptr.To[int32](0)}}})
	}, v1.Hostname("rules."+dom))
	r := expect(t, ns, "rules", "invalid backend", func(rt *v1.Route) error {
		return all(cond(rt, v1.ConditionAccepted, metav1.ConditionTrue, v1.ReasonAccepted),
			cond(rt, v1.ConditionResolvedRefs, metav1.ConditionFalse, v1.ReasonInvalidBackend), hosts(rt, v1.Hostname("rules."+dom)))
	})
	if m := meta.FindStatusCondition(r.Status.Conditions, v1.ConditionResolvedRefs).Message; !strings.Contains(m, "rule 1 (dead)") {
		t.Errorf("message %q does not name the rule", m)
	}
}

func TestRouteLimitAndMissingFleet(t *testing.T) {
	start(t)
	ctx := context.Background()
	fleet, vip, u := fixture(t)
	dom := "l-" + u + ".example.com"
	ns := mkTenant(t, "tl-"+u, fleet, "", v1.TenantLimits{MaxRoutes: ptr.To[int32](1)}, v1.Hostname("*."+dom))
	first := mkRoute(t, ns, "first", nil, v1.Hostname("a."+dom))
	time.Sleep(1100 * time.Millisecond)
	mkRoute(t, ns, "second", nil, v1.Hostname("b."+dom))
	expect(t, ns, "second", "over the limit", func(rt *v1.Route) error {
		return all(cond(rt, v1.ConditionAccepted, metav1.ConditionFalse, v1.ReasonLimitExceeded), hosts(rt))
	})
	if err := env.Client.Delete(ctx, first); err != nil {
		t.Fatal(err)
	}
	expect(t, ns, "second", "admitted once the first is gone", func(rt *v1.Route) error {
		return all(cond(rt, v1.ConditionAccepted, metav1.ConditionTrue, v1.ReasonAccepted), addr(rt, vip))
	})

	nsX := mkTenant(t, "tx-"+u, "nofleet-"+u, "", v1.TenantLimits{}, v1.Hostname("*.x-"+dom))
	mkRoute(t, nsX, "r", nil, v1.Hostname("a.x-"+dom))
	expect(t, nsX, "r", "no fleet", func(rt *v1.Route) error {
		return all(cond(rt, v1.ConditionAccepted, metav1.ConditionFalse, v1.ReasonFleetNotFound), hosts(rt), addr(rt, ""))
	})
	if err := env.Client.Create(ctx, &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: "nofleet-" + u},
		Spec: v1.ProxyFleetSpec{VIP: "127.0.51.1", Exposure: v1.ExposureNone}}); err != nil {
		t.Fatal(err)
	}
	expect(t, nsX, "r", "fleet created", func(rt *v1.Route) error {
		return all(cond(rt, v1.ConditionAccepted, metav1.ConditionTrue, v1.ReasonAccepted), addr(rt, "127.0.51.1"))
	})
}

// An older Route that grows takes the tenant's limit from a younger one,
// which is refused without any change to it, and admitted again when the
// older one shrinks back.
func TestOlderRouteGrowingPushesAYoungerOneOverTheLimit(t *testing.T) {
	start(t)
	ctx := context.Background()
	fleet, vip, u := fixture(t)
	dom := "g-" + u + ".example.com"
	ns := mkTenant(t, "tg-"+u, fleet, "", v1.TenantLimits{MaxHostnames: ptr.To[int32](2)}, v1.Hostname("*."+dom))
	older := mkRoute(t, ns, "older", nil, v1.Hostname("a."+dom))
	time.Sleep(1100 * time.Millisecond) // creation timestamps have second resolution
	mkRoute(t, ns, "younger", nil, v1.Hostname("b."+dom))
	expect(t, ns, "younger", "admitted", func(rt *v1.Route) error {
		return all(cond(rt, v1.ConditionAccepted, metav1.ConditionTrue, v1.ReasonAccepted), addr(rt, vip))
	})
	grow := func(hs ...v1.Hostname) {
		t.Helper()
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(older), older); err != nil {
			t.Fatal(err)
		}
		older.Spec.Hostnames = hs
		if err := env.Client.Update(ctx, older); err != nil {
			t.Fatal(err)
		}
	}
	grow(v1.Hostname("a."+dom), v1.Hostname("c."+dom))
	expect(t, ns, "younger", "over maxHostnames", func(rt *v1.Route) error {
		return all(cond(rt, v1.ConditionAccepted, metav1.ConditionFalse, v1.ReasonLimitExceeded), hosts(rt))
	})
	grow(v1.Hostname("a." + dom))
	expect(t, ns, "younger", "admitted again", func(rt *v1.Route) error {
		return all(cond(rt, v1.ConditionAccepted, metav1.ConditionTrue, v1.ReasonAccepted), addr(rt, vip))
	})
}

// A Tenant pattern that is a public suffix wildcard claims nothing, and the
// refusal says why.
func TestPublicSuffixPatternRefused(t *testing.T) {
	start(t)
	fleet, vip, u := fixture(t)
	own := v1.Hostname("www.own-" + u + ".example.com")
	ns := mkTenant(t, "tps-"+u, fleet, "", v1.TenantLimits{}, "*.com", "*.co.uk", own)
	mkRoute(t, ns, "r", nil, own, v1.Hostname("shop-"+u+".com"), v1.Hostname("*.shop-"+u+".co.uk"))
	rt := expect(t, ns, "r", "only its own name accepted", func(rt *v1.Route) error {
		return all(cond(rt, v1.ConditionAccepted, metav1.ConditionTrue, v1.ReasonHostnameNotAllowed), hosts(rt, own), addr(rt, vip))
	})
	c := meta.FindStatusCondition(rt.Status.Conditions, v1.ConditionAccepted)
	for _, want := range []string{"pattern *.com is a public suffix", "pattern *.co.uk is a public suffix"} {
		if !strings.Contains(c.Message, want) {
			t.Errorf("Accepted message %q lacks %q", c.Message, want)
		}
	}
}
