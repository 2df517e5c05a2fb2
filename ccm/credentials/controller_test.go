package credentials

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/testenv"
)

func kubeconfig(t *testing.T, token string) []byte {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["management"] = &clientcmdapi.Cluster{Server: "https://127.0.0.1:6443"}
	cfg.AuthInfos["fleetlb-ccm"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["default"] = &clientcmdapi.Context{Cluster: "management", AuthInfo: "fleetlb-ccm", Namespace: "tenant-a"}
	cfg.CurrentContext = "default"
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestToken(t *testing.T) {
	if tok, err := Token(kubeconfig(t, "abc")); err != nil || tok != "abc" {
		t.Fatalf("Token = %q, %v", tok, err)
	}
	for name, kc := range map[string][]byte{"not yaml": []byte("{"), "no token": kubeconfig(t, ""), "no context": []byte("apiVersion: v1\nkind: Config\n")} {
		if _, err := Token(kc); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestRenewedTokenReachesFileAndTenantSecret: one API server plays both
// clusters (the tenant namespace for the management side, fleetlb-system for
// the tenant side).
func TestRenewedTokenReachesFileAndTenantSecret(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	ctx := context.Background()
	for _, ns := range []string{"tenant-a", "fleetlb-system"} {
		if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	mgmtSecret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: v1.KubeconfigSecretName},
		Data: map[string][]byte{v1.KubeconfigKey: kubeconfig(t, "t1")}}
	local := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "fleetlb-system", Name: "fleetlb-management-kubeconfig"},
		Data: map[string][]byte{v1.KubeconfigKey: kubeconfig(t, "t0")}}
	for _, s := range []*corev1.Secret{mgmtSecret, local} {
		if err := env.Client.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if _, err := WriteFile(tokenFile, []byte("t0")); err != nil {
		t.Fatal(err)
	}

	mgr := env.NewManager(t)
	mgmt, err := cluster.New(env.Config, func(o *cluster.Options) {
		o.Scheme = env.Scheme
		o.Cache.DefaultNamespaces = map[string]cache.Config{"tenant-a": {}}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := mgr.Add(mgmt); err != nil {
		t.Fatal(err)
	}
	r := &Reconciler{Mgmt: mgmt.GetClient(), Namespace: "tenant-a", TokenFile: tokenFile,
		TenantReader: mgr.GetAPIReader(), TenantWriter: mgr.GetClient(), Persist: &types.NamespacedName{Namespace: local.Namespace, Name: local.Name}, Log: testr.New(t)}
	if err := r.SetupWithManager(mgr, mgmt); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, mgr)

	holds := func(token string) {
		t.Helper()
		testenv.Eventually(t, "token "+token+" in the file and the tenant Secret", func() error {
			b, err := os.ReadFile(tokenFile)
			if err != nil {
				return err
			}
			if string(b) != token {
				return fmt.Errorf("token file holds %q", b)
			}
			var s corev1.Secret
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(local), &s); err != nil {
				return err
			}
			if tok, err := Token(s.Data[v1.KubeconfigKey]); err != nil || tok != token {
				return fmt.Errorf("tenant Secret holds %q (%v)", tok, err)
			}
			return nil
		})
	}
	holds("t1")

	// The manager renews the token.
	mgmtSecret.Data[v1.KubeconfigKey] = kubeconfig(t, "t2")
	if err := env.Client.Update(ctx, mgmtSecret); err != nil {
		t.Fatal(err)
	}
	holds("t2")

	// A broken Secret never replaces a working token.
	mgmtSecret.Data[v1.KubeconfigKey] = []byte("not a kubeconfig")
	if err := env.Client.Update(ctx, mgmtSecret); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the cache sees the broken Secret", func() error {
		var s corev1.Secret
		if err := mgmt.GetClient().Get(ctx, client.ObjectKeyFromObject(mgmtSecret), &s); err != nil {
			return err
		}
		if string(s.Data[v1.KubeconfigKey]) != "not a kubeconfig" {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	if _, err := r.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(mgmtSecret)}); err != nil {
		t.Fatalf("Reconcile on a broken Secret: %v", err)
	}
	holds("t2")
}
