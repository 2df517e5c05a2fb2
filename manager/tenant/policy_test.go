package tenant

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/testenv"
)

// installPolicy applies deploy/charts/fleetlb/files/tenant-policy.yaml, as the harness and
// the kustomize base do.
func installPolicy(t *testing.T) {
	t.Helper()
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := env.Kubectl(context.Background(), "apply", "-f", filepath.Join(root, "deploy", "charts", "fleetlb", "files", "tenant-policy.yaml")); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

// refused checks err is a denial whose message contains want.
func refused(err error, want string) error {
	if err == nil {
		return errors.New("allowed")
	}
	if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		return fmt.Errorf("not a denial: %v", err)
	}
	if !strings.Contains(err.Error(), want) {
		return fmt.Errorf("message %q does not say %q", err.Error(), want)
	}
	return nil
}

func tlsSecret(ns, name string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: []byte("cert"), corev1.TLSPrivateKeyKey: []byte("key")},
	}
}

// The ValidatingAdmissionPolicy of deploy/charts/fleetlb, against the real
// apiserver, for a tenant's ServiceAccount: with its Role (issued by the
// controller) and as itself (impersonated), every forbidden write is refused
// with a message it can read; what the ccm does passes; the manager (here an
// administrator) is not affected.
func TestTenantPolicy(t *testing.T) {
	startController(t)
	installPolicy(t)
	ctx := context.Background()
	name := uniq("policy")
	if err := env.Client.Create(ctx, newTenant(name)); err != nil {
		t.Fatal(err)
	}
	ns := Namespace(name)
	tenantClient(t, name) // RBAC and kubeconfig are in place
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + ns + ":" + CCMName,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}
	as, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}

	// Each policy takes effect once the apiserver has loaded it; they load
	// independently, so probe both.
	eventually(t, "secrets policy in effect", func() error {
		return refused(as.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "probe"}}), "kubernetes.io/tls")
	})
	probe := lb(ns, "probe")
	probe.Finalizers = []string{"fleetlb.io/address-release"}
	if err := env.Client.Create(ctx, probe); err != nil {
		t.Fatal(err)
	}
	eventually(t, "finalizers policy in effect", func() error {
		// A try before the policy loaded removed the finalizer: put it back.
		var cur v1.LoadBalancer
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(probe), &cur); err != nil {
			return err
		}
		if len(cur.Finalizers) == 0 {
			cur.Finalizers = probe.Finalizers
			if err := env.Client.Update(ctx, &cur); err != nil {
				return err
			}
		}
		cur.Finalizers = nil
		return refused(as.Update(ctx, &cur), "is managed by fleetlb-manager")
	})

	// Secrets: kubernetes.io/tls only.
	token := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "forever", Annotations: map[string]string{corev1.ServiceAccountNameKey: CCMName}},
		Type:       corev1.SecretTypeServiceAccountToken,
	}
	if err := refused(as.Create(ctx, token), "only write Secrets of type kubernetes.io/tls, not kubernetes.io/service-account-token"); err != nil {
		t.Errorf("service-account-token Secret: %v", err)
	}
	tls := tlsSecret(ns, "www")
	if err := as.Create(ctx, tls); err != nil {
		t.Fatalf("the ccm copying a TLS Secret: %v", err)
	}
	tls.Data[corev1.TLSCertKey] = []byte("renewed")
	if err := as.Update(ctx, tls); err != nil {
		t.Errorf("the ccm updating a TLS Secret: %v", err)
	}
	if err := as.Delete(ctx, tls); err != nil {
		t.Errorf("the ccm deleting a TLS Secret: %v", err)
	}

	// The kubeconfig Secret: readable, nothing else.
	var kc corev1.Secret
	if err := as.Get(ctx, client.ObjectKey{Namespace: ns, Name: KubeconfigSecretName}, &kc); err != nil {
		t.Fatalf("the ccm reading its kubeconfig: %v", err)
	}
	kc.Data[KubeconfigKey] = []byte("mine now")
	if err := refused(as.Update(ctx, &kc), "managed by fleetlb-manager"); err != nil {
		t.Errorf("updating the kubeconfig Secret: %v", err)
	}
	if err := refused(as.Patch(ctx, &kc, client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"labels":{"x":"y"}}}`))), "managed by fleetlb-manager"); err != nil {
		t.Errorf("patching the kubeconfig Secret: %v", err)
	}
	if err := refused(as.Delete(ctx, &kc), "managed by fleetlb-manager"); err != nil {
		t.Errorf("deleting the kubeconfig Secret: %v", err)
	}
	if err := as.DeleteAllOf(ctx, &corev1.Secret{}, client.InNamespace(ns)); !apierrors.IsForbidden(err) {
		t.Errorf("deleting every Secret at once: %v, want Forbidden (the Role has no deletecollection)", err)
	}

	// fleetlb.io/ finalizers stay; the tenant's own may come and go.
	const held = "fleetlb.io/address-release"
	objs := []client.Object{
		lb(ns, "web"),
		&v1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "r"}, Spec: v1.RouteSpec{
			Source:    v1.RouteSource{Kind: v1.SourceIngress, Cluster: "c", Namespace: "default", Name: "r", UID: "u"},
			Hostnames: []v1.Hostname{"www.example.com"},
			Rules:     []v1.RouteRule{{Backends: []v1.RouteBackend{{NodePort: 30080}}}},
		}},
		&v1.TenantNodes{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: v1.TenantNodesName}},
	}
	for _, o := range objs {
		kind := fmt.Sprintf("%T", o)
		if err := as.Create(ctx, o); err != nil {
			t.Fatalf("the ccm creating a %s: %v", kind, err)
		}
		// The manager adds its finalizer.
		o.SetFinalizers([]string{held})
		if err := env.Client.Update(ctx, o); err != nil {
			t.Fatal(err)
		}
		// Spec changes and the tenant's own finalizers pass.
		o.SetFinalizers([]string{held, "example.com/mine"})
		o.SetLabels(map[string]string{"changed": "yes"})
		if err := as.Update(ctx, o); err != nil {
			t.Errorf("%s: the ccm updating it: %v", kind, err)
		}
		o.SetFinalizers([]string{held})
		if err := as.Update(ctx, o); err != nil {
			t.Errorf("%s: the ccm removing its own finalizer: %v", kind, err)
		}
		o.SetFinalizers(nil)
		if err := refused(as.Update(ctx, o), "finalizer "+held+" is managed by fleetlb-manager"); err != nil {
			t.Errorf("%s: removing the finalizer by update: %v", kind, err)
		}
		if err := refused(as.Patch(ctx, o, client.RawPatch("application/json-patch+json", []byte(`[{"op":"remove","path":"/metadata/finalizers"}]`))), held); err != nil {
			t.Errorf("%s: removing the finalizer by JSON patch: %v", kind, err)
		}
		// Deleting is allowed; the finalizer holds the object for the manager.
		if err := as.Delete(ctx, o); err != nil {
			t.Errorf("%s: the ccm deleting it: %v", kind, err)
		}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(o), o); err != nil || o.GetDeletionTimestamp().IsZero() {
			t.Fatalf("%s: not held by its finalizer: %v", kind, err)
		}
		if err := refused(as.Patch(ctx, o, client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"finalizers":null}}`))), held); err != nil {
			t.Errorf("%s: removing the finalizer of a deleted object: %v", kind, err)
		}
		// The manager (not a tenant ServiceAccount) removes it.
		o.SetFinalizers(nil)
		if err := env.Client.Update(ctx, o); err != nil {
			t.Errorf("%s: the manager removing its finalizer: %v", kind, err)
		}
	}

	// The ccm creates its LoadBalancers with the manager's finalizer already
	// on (admission then writes only status): a create may carry it.
	withFinalizer := lb(ns, "born-held")
	withFinalizer.Finalizers = []string{v1.FinalizerAddressRelease}
	if err := as.Create(ctx, withFinalizer); err != nil {
		t.Errorf("the ccm creating a LoadBalancer with %s: %v", v1.FinalizerAddressRelease, err)
	} else if err := refused(as.Patch(ctx, withFinalizer, client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"finalizers":null}}`))), held); err != nil {
		t.Errorf("removing the finalizer it was created with: %v", err)
	}

	// The tenant's real kubeconfig gets the same answers.
	real := tenantClient(t, name)
	if err := refused(real.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "opaque"}, StringData: map[string]string{"a": "b"}}), "kubernetes.io/tls"); err != nil {
		t.Errorf("real kubeconfig, Opaque Secret: %v", err)
	}
	// An administrator is not a tenant: it may still do all of it.
	if err := env.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "admin-opaque"}}); err != nil {
		t.Errorf("administrator creating an Opaque Secret in a tenant namespace: %v", err)
	}
}

// The ccm's token is bound to the kubeconfig Secret: deleting the Secret
// revokes it, and the manager issues a new Secret with a new token.
func TestTokenBoundToKubeconfigSecret(t *testing.T) {
	startController(t)
	ctx := context.Background()
	name := uniq("bound")
	if err := env.Client.Create(ctx, newTenant(name)); err != nil {
		t.Fatal(err)
	}
	old := tenantClient(t, name)
	var sec corev1.Secret
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: Namespace(name), Name: KubeconfigSecretName}, &sec); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Delete(ctx, &sec); err != nil {
		t.Fatal(err)
	}
	eventually(t, "old token revoked", func() error {
		err := old.List(ctx, &v1.LoadBalancerList{}, client.InNamespace(Namespace(name)))
		if apierrors.IsUnauthorized(err) {
			return nil
		}
		return fmt.Errorf("old token still works: %v", err)
	})
	var renewed corev1.Secret
	eventually(t, "new kubeconfig Secret", func() error {
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: Namespace(name), Name: KubeconfigSecretName}, &renewed); err != nil {
			return err
		}
		if renewed.UID == sec.UID || len(renewed.Data[KubeconfigKey]) == 0 {
			return errors.New("not reissued yet")
		}
		return nil
	})
	cfg, err := clientcmd.RESTConfigFromKubeConfig(renewed.Data[KubeconfigKey])
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.List(ctx, &v1.LoadBalancerList{}, client.InNamespace(Namespace(name))); err != nil {
		t.Fatalf("new token: %v", err)
	}
}
