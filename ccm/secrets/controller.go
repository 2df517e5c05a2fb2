// Package secrets copies the TLS Secrets that served tenant objects (Ingress
// spec.tls, later Gateway listeners) reference into the tenant's namespace of
// the management cluster, as `<namespace>.<name>` of type kubernetes.io/tls.
// Only referenced Secrets are copied, copies follow their source, and a copy
// is deleted as soon as nothing references it any more.
//
// Tenant Secrets are never cached by the ccm: it watches their metadata only
// and reads a Secret's data directly from the apiserver when it copies it.
package secrets

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// Labels on a management copy that name its tenant source.
const (
	LabelCopyOfNamespace = "fleetlb.io/copy-of-namespace"
	LabelCopyOfName      = "fleetlb.io/copy-of-name"
)

// indexRefs is the field index, on every referrer type, of the Secrets an object references.
const indexRefs = "fleetlb.io/tls-secret-refs"

// CopyName is the management copy's name for a tenant Secret. Namespaces are
// DNS labels (no dots), so the dot keeps it unique.
func CopyName(namespace, name string) string { return namespace + "." + name }

// Referrer is one kind of tenant object that references TLS Secrets.
type Referrer struct {
	// Object is an empty object of the kind, e.g. &networkingv1.Ingress{}.
	Object client.Object
	// List is an empty list of the kind, e.g. &networkingv1.IngressList{}.
	List client.ObjectList
	// Refs are the Secrets obj references while it is served; none when it is not ours.
	// It must depend on obj alone: it feeds a cache index.
	Refs func(obj client.Object) []types.NamespacedName
	// Permitted, when set, says whether a reference from obj to a Secret in
	// another namespace is allowed (a ReferenceGrant); unset allows none.
	Permitted func(ctx context.Context, obj client.Object, secret types.NamespacedName) (bool, error)
	// Also, when set, is another kind whose changes may change what is
	// referenced (ReferenceGrants); AlsoRefs names the Secrets to re-check.
	Also     client.Object
	AlsoRefs func(ctx context.Context, obj client.Object) []types.NamespacedName
}

// Reconciler keeps the management copies equal to the referenced tenant Secrets.
type Reconciler struct {
	// Tenant reads tenant Secrets; use the manager's APIReader so Secret data is never cached.
	Tenant client.Reader
	// Mgmt reaches the tenant's namespace in the management cluster.
	Mgmt client.Client
	// Namespace is the tenant's namespace in the management cluster.
	Namespace string
	Recorder  recorder.EventRecorder

	// referrers that keep a Secret copied; set by SetupWithManager.
	referrers []Referrer
	// cache lists referrers by index.
	cache client.Reader
}

// SetupWithManager registers the controller and the referrer indexes.
func (r *Reconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager, mgmt cluster.Cluster, referrers ...Referrer) error {
	if len(referrers) == 0 {
		return fmt.Errorf("secrets: no referrers: nothing would ever be copied")
	}
	r.referrers, r.cache = referrers, mgr.GetCache()
	b := ctrl.NewControllerManagedBy(mgr).
		Named("secrets").
		For(&corev1.Secret{}, builder.OnlyMetadata).
		WatchesRawSource(source.Kind(mgmt.GetCache(), &corev1.Secret{},
			handler.TypedEnqueueRequestsFromMapFunc(func(_ context.Context, s *corev1.Secret) []reconcile.Request {
				ns, name := s.Labels[LabelCopyOfNamespace], s.Labels[LabelCopyOfName]
				if ns == "" || name == "" {
					return nil
				}
				return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}}}
			})))
	for _, ref := range referrers {
		refs := ref.Refs
		if err := mgr.GetFieldIndexer().IndexField(ctx, ref.Object, indexRefs, func(o client.Object) []string {
			var keys []string
			for _, k := range refs(o) {
				keys = append(keys, k.String())
			}
			return keys
		}); err != nil {
			return err
		}
		if ref.Also != nil {
			alsoRefs := ref.AlsoRefs
			b = b.Watches(ref.Also, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
				var reqs []reconcile.Request
				for _, k := range alsoRefs(ctx, o) {
					reqs = append(reqs, reconcile.Request{NamespacedName: k})
				}
				return reqs
			}))
		}
		// Old and new objects are both mapped, so a dropped reference is seen too.
		b = b.Watches(ref.Object, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			var reqs []reconcile.Request
			for _, k := range refs(o) {
				reqs = append(reqs, reconcile.Request{NamespacedName: k})
			}
			return reqs
		}))
	}
	return b.Complete(r)
}

// referenced reports whether any served object references the Secret.
func (r *Reconciler) referenced(ctx context.Context, key types.NamespacedName) (bool, error) {
	for _, ref := range r.referrers {
		list := ref.List.DeepCopyObject().(client.ObjectList)
		if err := r.cache.List(ctx, list, client.MatchingFields{indexRefs: key.String()}); err != nil {
			return false, err
		}
		items, err := meta.ExtractList(list)
		if err != nil {
			return false, err
		}
		for _, item := range items {
			o := item.(client.Object)
			if o.GetNamespace() == key.Namespace {
				return true, nil
			}
			if ref.Permitted == nil {
				continue
			}
			if ok, err := ref.Permitted(ctx, o, key); err != nil || ok {
				return ok, err
			}
		}
	}
	return false, nil
}

// Reconcile implements reconcile.Reconciler; the request names a tenant Secret.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	want, err := r.referenced(ctx, req.NamespacedName)
	if err != nil {
		return ctrl.Result{}, err
	}
	var src *corev1.Secret
	if want {
		src = &corev1.Secret{}
		switch err := r.Tenant.Get(ctx, req.NamespacedName, src); {
		case apierrors.IsNotFound(err):
			// The manager reports SecretNotFound on the Route; the copy of
			// a deleted Secret must not outlive it.
			src, want = nil, false
		case err != nil:
			return ctrl.Result{}, err
		case !usable(src):
			r.Recorder.Eventf(src, nil, corev1.EventTypeWarning, "SecretNotTLS", "CopySecret",
				"referenced as a TLS certificate but it has no %s and %s: not copied to the fleet", corev1.TLSCertKey, corev1.TLSPrivateKeyKey)
			want = false
		}
	}

	var existing corev1.Secret
	key := client.ObjectKey{Namespace: r.Namespace, Name: CopyName(req.Namespace, req.Name)}
	err = r.Mgmt.Get(ctx, key, &existing)
	switch {
	case apierrors.IsNotFound(err):
		if !want {
			return ctrl.Result{}, nil
		}
		cp := r.desired(src)
		if err := r.Mgmt.Create(ctx, cp); apierrors.IsAlreadyExists(err) {
			return ctrl.Result{}, nil // our cache lags; the copy's event brings us back
		} else if err != nil {
			return ctrl.Result{}, err
		}
		logger.V(1).Info("copied TLS Secret", "copy", key.Name)
		return ctrl.Result{}, nil
	case err != nil:
		return ctrl.Result{}, err
	}
	if existing.Labels[LabelCopyOfNamespace] != req.Namespace || existing.Labels[LabelCopyOfName] != req.Name {
		// Not a copy of ours (someone else's object with the same name): leave it.
		if want {
			r.Recorder.Eventf(src, nil, corev1.EventTypeWarning, "CopyConflict", "CopySecret",
				"the management namespace already has a Secret %s that is not a copy of this one", key.Name)
		}
		return ctrl.Result{}, nil
	}
	if !want || existing.Type != corev1.SecretTypeTLS {
		// The type of a Secret is immutable: a wrong one is replaced.
		if existing.DeletionTimestamp.IsZero() {
			if err := r.Mgmt.Delete(ctx, &existing); client.IgnoreNotFound(err) != nil {
				return ctrl.Result{}, err
			}
			logger.V(1).Info("deleted TLS Secret copy", "copy", key.Name)
		}
		return ctrl.Result{}, nil // a replacement is made on the deletion event
	}
	cp := r.desired(src)
	if equality.Semantic.DeepEqual(existing.Data, cp.Data) && equality.Semantic.DeepEqual(existing.Labels, cp.Labels) {
		return ctrl.Result{}, nil
	}
	patch := client.MergeFrom(existing.DeepCopy())
	existing.Labels, existing.Data = cp.Labels, cp.Data
	if err := r.Mgmt.Patch(ctx, &existing, patch); err != nil {
		return ctrl.Result{}, err
	}
	logger.V(1).Info("updated TLS Secret copy", "copy", key.Name)
	return ctrl.Result{}, nil
}

// usable: a certificate and a key, whatever the Secret's declared type.
func usable(s *corev1.Secret) bool {
	return len(s.Data[corev1.TLSCertKey]) > 0 && len(s.Data[corev1.TLSPrivateKeyKey]) > 0
}

// desired is the copy of src: the certificate, the key and a CA if present; nothing else.
func (r *Reconciler) desired(src *corev1.Secret) *corev1.Secret {
	data := map[string][]byte{corev1.TLSCertKey: src.Data[corev1.TLSCertKey], corev1.TLSPrivateKeyKey: src.Data[corev1.TLSPrivateKeyKey]}
	if ca := src.Data["ca.crt"]; len(ca) > 0 {
		data["ca.crt"] = ca
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: r.Namespace, Name: CopyName(src.Namespace, src.Name),
			Labels: map[string]string{LabelCopyOfNamespace: src.Namespace, LabelCopyOfName: src.Name},
		},
		Type: corev1.SecretTypeTLS,
		Data: data,
	}
}
