// Package credentials keeps the ccm's management-cluster token fresh.
//
// The manager issues the ccm a short-lived token in the kubeconfig Secret
// fleetlb-ccm-kubeconfig of the tenant namespace and replaces it after two
// thirds of its lifetime. The ccm, still holding a valid token, watches that
// Secret and
//   - writes the new token to the file its management client reads
//     (client-go re-reads a BearerTokenFile every minute), and
//   - when configured, stores the new kubeconfig in the tenant-cluster Secret
//     the ccm was started from, so that a restarted ccm starts with a valid
//     token instead of the one it was installed with.
//
// It runs on every replica, leader or not: all of them read the management
// cluster.
package credentials

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// Reconciler follows the kubeconfig Secret in the management cluster.
type Reconciler struct {
	// Mgmt reads the tenant namespace of the management cluster.
	Mgmt client.Reader
	// Namespace is the tenant namespace.
	Namespace string
	// TokenFile is where the management client reads its bearer token.
	TokenFile string
	// TenantReader and TenantWriter reach the tenant cluster; both nil unless
	// Persist is set. Reads are uncached: the ccm caches no tenant Secrets.
	TenantReader client.Reader
	TenantWriter client.Writer
	// Persist, when set, is the tenant-cluster Secret (key "kubeconfig")
	// kept equal to the latest kubeconfig.
	Persist *types.NamespacedName
	Log     logr.Logger
}

// SetupWithManager watches the kubeconfig Secret through the management cache.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager, mgmt cluster.Cluster) error {
	key := types.NamespacedName{Namespace: r.Namespace, Name: v1.KubeconfigSecretName}
	only := []reconcile.Request{{NamespacedName: key}}
	return ctrl.NewControllerManagedBy(mgr).
		Named("credentials").
		WithOptions(controller.Options{NeedLeaderElection: ptr.To(false)}).
		WatchesRawSource(source.Kind(mgmt.GetCache(), &corev1.Secret{},
			handler.TypedEnqueueRequestsFromMapFunc(func(context.Context, *corev1.Secret) []reconcile.Request { return only }),
			predicate.NewTypedPredicateFuncs(func(s *corev1.Secret) bool { return s.Name == key.Name }))).
		Complete(r)
}

// Token returns the bearer token of a kubeconfig's current context.
func Token(kubeconfig []byte) (string, error) {
	cfg, err := clientcmd.Load(kubeconfig)
	if err != nil {
		return "", err
	}
	ctx, ok := cfg.Contexts[cfg.CurrentContext]
	if !ok {
		return "", fmt.Errorf("no current context %q", cfg.CurrentContext)
	}
	ai, ok := cfg.AuthInfos[ctx.AuthInfo]
	if !ok || ai.Token == "" {
		return "", fmt.Errorf("context %q has no token", cfg.CurrentContext)
	}
	return ai.Token, nil
}

// WriteFile replaces path with data atomically (a reader never sees half a
// token) and leaves it alone when it already holds data.
func WriteFile(path string, data []byte) (changed bool, err error) {
	if cur, err := os.ReadFile(path); err == nil && bytes.Equal(cur, data) {
		return false, nil
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".token-*")
	if err != nil {
		return false, err
	}
	defer os.Remove(f.Name()) // after a successful rename there is nothing left to remove
	if _, err := f.Write(data); err != nil {
		f.Close()
		return false, err
	}
	if err := f.Close(); err != nil {
		return false, err
	}
	return true, os.Rename(f.Name(), path)
}

// Reconcile implements reconcile.Reconciler.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var sec corev1.Secret
	if err := r.Mgmt.Get(ctx, req.NamespacedName, &sec); apierrors.IsNotFound(err) {
		return ctrl.Result{}, nil // the manager makes it again; the current token stays
	} else if err != nil {
		return ctrl.Result{}, err
	}
	kc := sec.Data[v1.KubeconfigKey]
	token, err := Token(kc)
	if err != nil {
		// A broken Secret must not replace a working token; nothing to retry.
		r.Log.Error(err, "the management kubeconfig Secret is unusable; keeping the current token", "secret", req.NamespacedName)
		return ctrl.Result{}, nil
	}
	changed, err := WriteFile(r.TokenFile, []byte(token))
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("writing the token file: %w", err)
	}
	if changed {
		r.Log.Info("management token renewed", "expires", sec.Annotations[v1.AnnotationTokenExpires])
	}
	if r.Persist == nil {
		return ctrl.Result{}, nil
	}
	var local corev1.Secret
	if err := r.TenantReader.Get(ctx, *r.Persist, &local); err != nil {
		return ctrl.Result{}, fmt.Errorf("reading %s to store the renewed kubeconfig: %w", r.Persist, err)
	}
	if bytes.Equal(local.Data[v1.KubeconfigKey], kc) {
		return ctrl.Result{}, nil
	}
	patch := client.MergeFromWithOptions(local.DeepCopy(), client.MergeFromWithOptimisticLock{})
	if local.Data == nil {
		local.Data = map[string][]byte{}
	}
	local.Data[v1.KubeconfigKey] = kc
	if err := r.TenantWriter.Patch(ctx, &local, patch); err != nil {
		return ctrl.Result{}, fmt.Errorf("storing the renewed kubeconfig in %s: %w", r.Persist, err)
	}
	r.Log.Info("stored the renewed management kubeconfig", "secret", r.Persist.String())
	return ctrl.Result{}, nil
}
