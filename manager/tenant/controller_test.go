package tenant

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, testenv.Options{}, &env) }

// startController runs the reconciler in a real manager for the test.
func startController(t *testing.T) *Reconciler {
	t.Helper()
	mgr := env.NewManager(t)
	r := &Reconciler{
		Client:   mgr.GetClient(),
		Recorder: mgr.GetEventRecorder("tenant"),
		Options:  Options{ServerURL: env.Config.Host, CAData: env.Config.CAData, TokenTTL: time.Hour},
	}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, mgr)
	ensurePool(t, "pool") // newTenant's pool: a Tenant is Ready only when it exists
	return r
}

// eventually retries f until it succeeds or the deadline passes.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	testenv.Eventually(t, what, f)
}

var seq atomic.Int32

// uniq makes names unique across -count repetitions: a deleted tenant's
// namespace stays Terminating in envtest, which runs no namespace controller.
func uniq(prefix string) string { return fmt.Sprintf("%s-%d", prefix, seq.Add(1)) }

func newTenant(name string) *v1.Tenant {
	return &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.TenantSpec{AddressPool: "pool"}}
}

func lb(ns, name string) *v1.LoadBalancer {
	return &v1.LoadBalancer{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1.LoadBalancerSpec{
			Source: v1.ServiceSource{Cluster: "c", Namespace: "default", Name: name, UID: "u"},
			Ports:  []v1.LoadBalancerPort{{Port: 80, Protocol: v1.ProtocolTCP, NodePort: 30080}},
		},
	}
}

// tenantClient builds a client from the kubeconfig the controller issued.
func tenantClient(t *testing.T, name string) client.Client {
	t.Helper()
	var sec corev1.Secret
	eventually(t, "kubeconfig secret of "+name, func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: Namespace(name), Name: KubeconfigSecretName}, &sec); err != nil {
			return err
		}
		if len(sec.Data[KubeconfigKey]) == 0 {
			return errors.New("the Secret has no kubeconfig yet (it exists before its bound token)")
		}
		return nil
	})
	cfg, err := clientcmd.RESTConfigFromKubeConfig(sec.Data[KubeconfigKey])
	if err != nil {
		t.Fatal(err)
	}
	var c client.Client
	// RBAC for a new binding can take a moment to be visible to the authorizer.
	eventually(t, "tenant client works", func() error {
		var err error
		if c, err = client.New(cfg, client.Options{Scheme: env.Scheme}); err != nil {
			return err
		}
		return c.List(context.Background(), &v1.LoadBalancerList{}, client.InNamespace(Namespace(name)))
	})
	return c
}

func TestOnboardingAndIsolation(t *testing.T) {
	startController(t)
	ctx := context.Background()
	ta, tb := uniq("iso-a"), uniq("iso-b")
	for _, n := range []string{ta, tb} {
		if err := env.Client.Create(ctx, newTenant(n)); err != nil {
			t.Fatal(err)
		}
	}
	a := tenantClient(t, ta)
	tenantClient(t, tb)

	// Everything tenant a needs in its own namespace works.
	if err := a.Create(ctx, lb(Namespace(ta), "web")); err != nil {
		t.Fatalf("tenant a creating a LoadBalancer in its namespace: %v", err)
	}
	if err := a.Create(ctx, &v1.TenantNodes{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace(ta), Name: v1.TenantNodesName}}); err != nil {
		t.Fatalf("tenant a writing its TenantNodes: %v", err)
	}
	if err := a.Create(ctx, tlsSecret(Namespace(ta), "tls")); err != nil {
		t.Fatalf("tenant a copying a Secret: %v", err)
	}

	// Nothing of tenant b, and nothing cluster-scoped.
	forbidden := map[string]error{
		"create LB in b":       a.Create(ctx, lb(Namespace(tb), "web")),
		"list LBs in b":        a.List(ctx, &v1.LoadBalancerList{}, client.InNamespace(Namespace(tb))),
		"list LBs everywhere":  a.List(ctx, &v1.LoadBalancerList{}),
		"read b's kubeconfig":  a.Get(ctx, client.ObjectKey{Namespace: Namespace(tb), Name: KubeconfigSecretName}, &corev1.Secret{}),
		"list Tenants":         a.List(ctx, &v1.TenantList{}),
		"list AddressPools":    a.List(ctx, &v1.AddressPoolList{}),
		"list Namespaces":      a.List(ctx, &corev1.NamespaceList{}),
		"edit its own Role":    a.Delete(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace(ta), Name: CCMName}}),
		"write its own status": a.Status().Update(ctx, lb(Namespace(ta), "web")),
	}
	for what, err := range forbidden {
		if !apierrors.IsForbidden(err) {
			t.Errorf("tenant a could %s: err = %v, want Forbidden", what, err)
		}
	}

	// Status: Ready, namespace, counts.
	eventually(t, "tenant status", func() error {
		var tn v1.Tenant
		if err := env.Client.Get(ctx, types.NamespacedName{Name: ta}, &tn); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(tn.Status.Conditions, v1.ConditionReady) || tn.Status.Namespace != Namespace(ta) ||
			tn.Status.KubeconfigSecret != KubeconfigSecretName || tn.Status.LoadBalancers != 1 || tn.Status.ObservedGeneration != tn.Generation {
			return fmt.Errorf("status %+v", tn.Status)
		}
		return nil
	})
}

func TestStatusNotRewrittenAndTokenRotated(t *testing.T) {
	r := startController(t)
	ctx := context.Background()
	name := uniq("rot")
	if err := env.Client.Create(ctx, newTenant(name)); err != nil {
		t.Fatal(err)
	}
	tenantClient(t, name)
	var before v1.Tenant
	eventually(t, "ready", func() error {
		if err := env.Client.Get(ctx, types.NamespacedName{Name: name}, &before); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(before.Status.Conditions, v1.ConditionReady) {
			return errors.New("not ready")
		}
		return nil
	})
	var secBefore corev1.Secret
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: Namespace(name), Name: KubeconfigSecretName}, &secBefore); err != nil {
		t.Fatal(err)
	}

	// A reconcile with nothing changed writes nothing and schedules the rotation.
	direct := &Reconciler{Client: env.Client, Recorder: r.Recorder, Options: r.Options, now: time.Now}
	res, err := direct.Reconcile(ctx, ctrl.Request{NamespacedName: types.NamespacedName{Name: name}})
	if err != nil {
		t.Fatal(err)
	}
	if res.RequeueAfter < 30*time.Minute || res.RequeueAfter > 40*time.Minute {
		t.Fatalf("rotation scheduled in %s, want about 40m (two thirds of 1h)", res.RequeueAfter)
	}
	var after v1.Tenant
	if err := env.Client.Get(ctx, types.NamespacedName{Name: name}, &after); err != nil {
		t.Fatal(err)
	}
	if after.ResourceVersion != before.ResourceVersion {
		t.Fatalf("an unchanged reconcile rewrote the Tenant (resourceVersion %s → %s)", before.ResourceVersion, after.ResourceVersion)
	}

	// 45 minutes later the token is past two thirds of its life: a new one is issued.
	direct.now = func() time.Time { return time.Now().Add(45 * time.Minute) }
	if _, err := direct.Reconcile(ctx, ctrl.Request{NamespacedName: types.NamespacedName{Name: name}}); err != nil {
		t.Fatal(err)
	}
	var secAfter corev1.Secret
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: Namespace(name), Name: KubeconfigSecretName}, &secAfter); err != nil {
		t.Fatal(err)
	}
	if string(secAfter.Data[KubeconfigKey]) == string(secBefore.Data[KubeconfigKey]) {
		t.Fatal("token was not rotated after two thirds of its lifetime")
	}
}

func TestDeletionRemovesOwnedObjectsInOrder(t *testing.T) {
	startController(t)
	ctx := context.Background()
	name := uniq("gone")
	if err := env.Client.Create(ctx, newTenant(name)); err != nil {
		t.Fatal(err)
	}
	tenantClient(t, name)
	// A LoadBalancer held by another controller's finalizer (IPAM, in the manager).
	held := lb(Namespace(name), "held")
	held.Finalizers = []string{"fleetlb.io/test-hold"}
	if err := env.Client.Create(ctx, held); err != nil {
		t.Fatal(err)
	}
	// The controller has seen it (its count says so) before the Tenant goes.
	eventually(t, "LoadBalancer counted", func() error {
		var tn v1.Tenant
		if err := env.Client.Get(ctx, types.NamespacedName{Name: name}, &tn); err != nil {
			return err
		}
		if tn.Status.LoadBalancers != 1 {
			return fmt.Errorf("status counts %d LoadBalancers", tn.Status.LoadBalancers)
		}
		return nil
	})
	if err := env.Client.Delete(ctx, newTenant(name)); err != nil {
		t.Fatal(err)
	}
	// The LoadBalancer is asked to go first; the namespace stays while it is there.
	eventually(t, "LoadBalancer deletion requested", func() error {
		var o v1.LoadBalancer
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(held), &o); err != nil {
			return err
		}
		if o.DeletionTimestamp.IsZero() {
			return errors.New("not being deleted yet")
		}
		return nil
	})
	var ns corev1.Namespace
	if err := env.Client.Get(ctx, client.ObjectKey{Name: Namespace(name)}, &ns); err != nil || !ns.DeletionTimestamp.IsZero() {
		t.Fatalf("namespace deleted before the tenant's LoadBalancers were gone: %v %v", err, ns.DeletionTimestamp)
	}
	// Release it as its controller would; then the namespace goes and the Tenant with it.
	var o v1.LoadBalancer
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(held), &o); err != nil {
		t.Fatal(err)
	}
	o.Finalizers = nil
	if err := env.Client.Update(ctx, &o); err != nil {
		t.Fatal(err)
	}
	eventually(t, "tenant gone", func() error {
		err := env.Client.Get(ctx, types.NamespacedName{Name: name}, &v1.Tenant{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("tenant still there: %v", err)
	})
	// envtest runs no namespace controller, so the namespace stays Terminating.
	if err := env.Client.Get(ctx, client.ObjectKey{Name: Namespace(name)}, &ns); err == nil && ns.DeletionTimestamp.IsZero() {
		t.Fatal("namespace not deleted")
	}
}
