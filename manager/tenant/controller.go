// Package tenant onboards tenant clusters: for every Tenant it keeps a
// namespace tenant-<name>, a ServiceAccount and a Role for the tenant's ccm
// limited to that namespace, and a kubeconfig Secret whose short-lived token is
// rotated before it expires. The token is bound to that Secret, so deleting
// the Secret revokes it. Deleting a Tenant removes its LoadBalancers and
// Routes first (so their addresses are released by their own finalizers), then
// the namespace.
package tenant

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

const (
	// Finalizer holds a Tenant until what it owns is gone.
	Finalizer = "fleetlb.io/tenant-cleanup"
	// NamespacePrefix + tenant name is the tenant's namespace.
	NamespacePrefix = "tenant-"
	// CCMName names the ServiceAccount, Role and RoleBinding of the tenant's ccm.
	CCMName = "fleetlb-ccm"
	// KubeconfigSecretName is the Secret with the ccm's kubeconfig (key KubeconfigKey).
	KubeconfigSecretName = v1.KubeconfigSecretName
	// KubeconfigKey is the key of the kubeconfig in that Secret.
	KubeconfigKey = v1.KubeconfigKey
)

// Namespace is the management namespace of a tenant.
func Namespace(tenant string) string { return NamespacePrefix + tenant }

// Options configure onboarding.
type Options struct {
	// ServerURL is the management apiserver URL written into tenant kubeconfigs.
	ServerURL string
	// CAData is the CA bundle that verifies ServerURL (PEM), written into kubeconfigs.
	CAData []byte
	// TokenTTL is the lifetime requested for ccm tokens; they are renewed after two thirds of it.
	TokenTTL time.Duration
}

// Reconciler keeps each Tenant's namespace, RBAC and kubeconfig.
type Reconciler struct {
	Client   client.Client
	Recorder recorder.EventRecorder
	Options  Options
	// CountDelay coalesces the status counts: a burst of LoadBalancers and
	// Routes is counted once per tenant per CountDelay, not once per object
	// (DefaultCountDelay when 0).
	CountDelay time.Duration
	now        func() time.Time
}

// DefaultCountDelay is Reconciler.CountDelay when unset.
const DefaultCountDelay = time.Second

// SetupWithManager registers the controller.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Options.TokenTTL == 0 {
		r.Options.TokenTTL = time.Hour
	}
	if r.Options.TokenTTL < 10*time.Minute {
		return fmt.Errorf("tenant: token TTL %s is below the apiserver's 10m minimum", r.Options.TokenTTL)
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.CountDelay <= 0 {
		r.CountDelay = DefaultCountDelay
	}
	// A change to the tenant's own objects (drift) maps to the Tenant at once.
	byNamespace := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		if req, ok := tenantOf(o); ok {
			return []reconcile.Request{req}
		}
		return nil
	})
	// Its LoadBalancers and Routes only move the counts: one reconcile per
	// tenant per CountDelay however many change.
	counted := handler.Funcs{
		CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.countLater(e.Object, q)
		},
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.countLater(e.ObjectNew, q)
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.countLater(e.Object, q)
		},
	}
	// Only what a count reads: an object appearing or going, its Accepted
	// status, or the number of addresses a LoadBalancer holds.
	countChanged := builder.WithPredicates(predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			if acceptedOf(e.ObjectOld) != acceptedOf(e.ObjectNew) {
				return true // admitted / refused counts
			}
			o, ok1 := e.ObjectOld.(*v1.LoadBalancer)
			n, ok2 := e.ObjectNew.(*v1.LoadBalancer)
			return ok1 && ok2 && len(o.Status.Addresses) != len(n.Status.Addresses)
		},
		GenericFunc: func(event.GenericEvent) bool { return false },
	})
	return ctrl.NewControllerManagedBy(mgr).
		// Our own status writes (and the hostname claims others record there) are no news.
		For(&v1.Tenant{}, builder.WithPredicates(notStatusOnly)).
		Owns(&corev1.Namespace{}).
		Watches(&corev1.ServiceAccount{}, byNamespace).
		Watches(&rbacv1.Role{}, byNamespace).
		Watches(&rbacv1.RoleBinding{}, byNamespace).
		Watches(&corev1.Secret{}, byNamespace).
		Watches(&v1.LoadBalancer{}, counted, countChanged).
		Watches(&v1.Route{}, counted, countChanged).
		Watches(&v1.AddressPool{}, handler.EnqueueRequestsFromMapFunc(r.tenantsOfPool)).
		Named("tenant").
		Complete(r)
}

// notStatusOnly passes Tenant updates other than of its status alone.
var notStatusOnly = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld, e.ObjectNew
		return o.GetGeneration() != n.GetGeneration() || o.GetDeletionTimestamp().IsZero() != n.GetDeletionTimestamp().IsZero() ||
			!slices.Equal(o.GetFinalizers(), n.GetFinalizers()) || !maps.Equal(o.GetLabels(), n.GetLabels()) ||
			!maps.Equal(o.GetAnnotations(), n.GetAnnotations())
	},
}

func tenantOf(o client.Object) (reconcile.Request, bool) {
	name, ok := Of(o.GetNamespace())
	if !ok {
		return reconcile.Request{}, false
	}
	return reconcile.Request{NamespacedName: types.NamespacedName{Name: name}}, true
}

// countLater enqueues o's Tenant after CountDelay; the queue keeps one entry
// per Tenant, so every change in between is counted by the same reconcile.
func (r *Reconciler) countLater(o client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	if req, ok := tenantOf(o); ok {
		q.AddAfter(req, r.CountDelay)
	}
}

// Of names the Tenant that owns namespace ns (tenant-<name>).
func Of(ns string) (string, bool) {
	name, ok := strings.CutPrefix(ns, NamespacePrefix)
	return name, ok && name != ""
}

// Reconcile implements reconcile.Reconciler.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var t v1.Tenant
	if err := r.Client.Get(ctx, req.NamespacedName, &t); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !t.DeletionTimestamp.IsZero() {
		return r.cleanup(ctx, &t)
	}
	if controllerutil.AddFinalizer(&t, Finalizer) {
		if err := r.Client.Update(ctx, &t); err != nil {
			return ctrl.Result{}, err
		}
	}

	ns := Namespace(t.Name)
	status := t.Status.DeepCopy()
	status.ObservedGeneration = t.Generation
	status.Namespace = ns
	renewIn, err := r.ensure(ctx, &t, ns)
	if err != nil {
		meta.SetStatusCondition(&status.Conditions, metav1.Condition{
			Type: v1.ConditionReady, Status: metav1.ConditionFalse, Reason: "SetupFailed",
			Message: err.Error(), ObservedGeneration: t.Generation,
		})
		r.Recorder.Eventf(&t, nil, corev1.EventTypeWarning, "SetupFailed", "Onboard", "%v", err)
		if serr := r.writeStatus(ctx, &t, status); serr != nil {
			return ctrl.Result{}, serr
		}
		return ctrl.Result{}, err
	}
	status.KubeconfigSecret = KubeconfigSecretName
	if err := r.count(ctx, ns, status); err != nil {
		return ctrl.Result{}, err
	}
	ready := metav1.Condition{
		Type: v1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1.ReasonReady,
		Message:            fmt.Sprintf("namespace %s and the ccm kubeconfig Secret %s are ready", ns, KubeconfigSecretName),
		ObservedGeneration: t.Generation,
	}
	if c, err := r.poolCondition(ctx, &t); err != nil {
		return ctrl.Result{}, err
	} else if c != nil {
		ready = *c
	}
	meta.SetStatusCondition(&status.Conditions, ready)
	meta.SetStatusCondition(&status.Conditions, r.hostnamesCondition(&t))
	if err := r.writeStatus(ctx, &t, status); err != nil {
		return ctrl.Result{}, err
	}
	// The next rotation is scheduled, not polled for.
	return ctrl.Result{RequeueAfter: renewIn}, nil
}

// writeStatus patches status only when it changed, so unchanged reconciles
// write nothing.
func (r *Reconciler) writeStatus(ctx context.Context, t *v1.Tenant, status *v1.TenantStatus) error {
	if equality.Semantic.DeepEqual(&t.Status, status) {
		return nil
	}
	patch := client.MergeFrom(t.DeepCopy())
	t.Status = *status
	return r.Client.Status().Patch(ctx, t, patch)
}

func (r *Reconciler) ensure(ctx context.Context, t *v1.Tenant, ns string) (time.Duration, error) {
	labels := map[string]string{v1.LabelTenant: t.Name}

	namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}
	if _, err := controllerutil.CreateOrUpdate(ctx, r.Client, namespace, func() error {
		if namespace.Labels == nil {
			namespace.Labels = map[string]string{}
		}
		namespace.Labels[v1.LabelTenant] = t.Name
		return controllerutil.SetControllerReference(t, namespace, r.Client.Scheme())
	}); err != nil {
		return 0, fmt.Errorf("namespace %s: %w", ns, err)
	}
	if !namespace.DeletionTimestamp.IsZero() {
		return 0, fmt.Errorf("namespace %s is being deleted", ns)
	}

	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: CCMName, Namespace: ns}}
	if _, err := controllerutil.CreateOrUpdate(ctx, r.Client, sa, func() error {
		sa.Labels = labels
		sa.AutomountServiceAccountToken = ptr.To(false)
		return nil
	}); err != nil {
		return 0, fmt.Errorf("service account: %w", err)
	}

	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: CCMName, Namespace: ns}}
	if _, err := controllerutil.CreateOrUpdate(ctx, r.Client, role, func() error {
		role.Labels = labels
		role.Rules = CCMRules()
		return nil
	}); err != nil {
		return 0, fmt.Errorf("role: %w", err)
	}

	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: CCMName, Namespace: ns}}
	if _, err := controllerutil.CreateOrUpdate(ctx, r.Client, rb, func() error {
		rb.Labels = labels
		rb.RoleRef = rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: CCMName}
		rb.Subjects = []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: CCMName, Namespace: ns}}
		return nil
	}); err != nil {
		return 0, fmt.Errorf("role binding: %w", err)
	}

	return r.ensureKubeconfig(ctx, t, ns, labels)
}

// CCMRules is everything a tenant's ccm may do, all inside its own namespace.
// RBAC cannot limit Secrets by type or spare one by name: the
// ValidatingAdmissionPolicy of deploy/charts/fleetlb/files/tenant-policy.yaml lets the
// tenant write only kubernetes.io/tls Secrets (no service-account-token
// Secret), keeps the kubeconfig Secret read-only and keeps fleetlb.io/
// finalizers. Nothing here reaches tokens (serviceaccounts/token).
func CCMRules() []rbacv1.PolicyRule {
	rw := []string{"get", "list", "watch", "create", "update", "patch", "delete"}
	return []rbacv1.PolicyRule{
		{APIGroups: []string{v1.GroupVersion.Group}, Resources: []string{"loadbalancers", "routes", "tenantnodes"}, Verbs: rw},
		{APIGroups: []string{v1.GroupVersion.Group}, Resources: []string{"loadbalancers/status", "routes/status"}, Verbs: []string{"get"}},
		{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: rw},
		{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"get", "list", "watch"}},
	}
}

// ensureKubeconfig keeps a valid kubeconfig in the Secret and returns when it must be renewed.
func (r *Reconciler) ensureKubeconfig(ctx context.Context, t *v1.Tenant, ns string, labels map[string]string) (time.Duration, error) {
	now := r.now()
	renewAfter := r.Options.TokenTTL * 2 / 3

	var sec corev1.Secret
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: KubeconfigSecretName}, &sec)
	if err != nil && !apierrors.IsNotFound(err) {
		return 0, err
	}
	if err == nil {
		if exp, perr := time.Parse(time.RFC3339, sec.Annotations[v1.AnnotationTokenExpires]); perr == nil {
			observeToken(t.Name, exp, r.Options.TokenTTL)
			renewAt := exp.Add(-r.Options.TokenTTL / 3)
			if now.Before(renewAt) && len(sec.Data[KubeconfigKey]) > 0 && r.kubeconfigCurrent(sec.Data[KubeconfigKey]) {
				return renewAt.Sub(now), nil
			}
		}
	}

	if apierrors.IsNotFound(err) {
		// The token is bound to this Secret, so the Secret comes first.
		sec = corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: KubeconfigSecretName, Namespace: ns, Labels: labels}, Type: corev1.SecretTypeOpaque}
		if err := r.Client.Create(ctx, &sec); err != nil {
			return 0, fmt.Errorf("kubeconfig secret: %w", err)
		}
	}
	// Bound to the Secret: deleting the Secret revokes the token at once.
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: ptr.To(int64(r.Options.TokenTTL / time.Second)),
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Secret", APIVersion: "v1", Name: sec.Name, UID: sec.UID},
	}}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: CCMName, Namespace: ns}}
	if err := r.Client.SubResource("token").Create(ctx, sa, tr); err != nil {
		return 0, fmt.Errorf("requesting a token for %s/%s: %w", ns, CCMName, err)
	}
	kc, err := r.kubeconfig(ns, tr.Status.Token)
	if err != nil {
		return 0, err
	}
	// An update of the Secret read or created above, never a re-creation: a
	// new Secret would have another UID than the token is bound to (a conflict
	// or a deleted Secret is retried from the start).
	sec.Labels = labels
	if sec.Annotations == nil {
		sec.Annotations = map[string]string{}
	}
	sec.Annotations[v1.AnnotationTokenExpires] = tr.Status.ExpirationTimestamp.UTC().Format(time.RFC3339)
	sec.Data = map[string][]byte{KubeconfigKey: kc}
	if err := r.Client.Update(ctx, &sec); err != nil {
		return 0, fmt.Errorf("kubeconfig secret: %w", err)
	}
	observeToken(t.Name, tr.Status.ExpirationTimestamp.Time, r.Options.TokenTTL)
	r.Recorder.Eventf(t, nil, corev1.EventTypeNormal, "KubeconfigIssued", "Onboard",
		"issued a ccm kubeconfig in %s/%s valid until %s", ns, KubeconfigSecretName, tr.Status.ExpirationTimestamp.UTC().Format(time.RFC3339))
	if d := tr.Status.ExpirationTimestamp.Sub(now) * 2 / 3; d > 0 && d < renewAfter {
		return d, nil
	}
	return renewAfter, nil
}

// kubeconfigCurrent reports whether a stored kubeconfig still points at the
// configured server with the configured CA (a flag change reissues it).
func (r *Reconciler) kubeconfigCurrent(data []byte) bool {
	cfg, err := clientcmd.Load(data)
	if err != nil {
		return false
	}
	c, ok := cfg.Clusters["management"]
	return ok && c.Server == r.Options.ServerURL && string(c.CertificateAuthorityData) == string(r.Options.CAData)
}

func (r *Reconciler) kubeconfig(ns, token string) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["management"] = &clientcmdapi.Cluster{Server: r.Options.ServerURL, CertificateAuthorityData: r.Options.CAData}
	cfg.AuthInfos[CCMName] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["default"] = &clientcmdapi.Context{Cluster: "management", AuthInfo: CCMName, Namespace: ns}
	cfg.CurrentContext = "default"
	return clientcmd.Write(*cfg)
}

func (r *Reconciler) count(ctx context.Context, ns string, status *v1.TenantStatus) error {
	// Only counted: no copies of the cache's objects.
	var lbs v1.LoadBalancerList
	if err := r.Client.List(ctx, &lbs, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
		return err
	}
	var routes v1.RouteList
	if err := r.Client.List(ctx, &routes, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
		return err
	}
	addrs := 0
	var decided [2]int32 // refused, admitted (by Accepted; undecided counts in neither)
	for i := range lbs.Items {
		addrs += len(lbs.Items[i].Status.Addresses)
		tally(&decided, lbs.Items[i].Status.Conditions)
	}
	for i := range routes.Items {
		tally(&decided, routes.Items[i].Status.Conditions)
	}
	status.LoadBalancers, status.Routes, status.Addresses = int32(len(lbs.Items)), int32(len(routes.Items)), int32(addrs)
	status.Refused, status.Admitted = decided[0], decided[1]
	return nil
}

// cleanup deletes what the tenant owns, in order, then releases the Tenant.
func (r *Reconciler) cleanup(ctx context.Context, t *v1.Tenant) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(t, Finalizer) {
		return ctrl.Result{}, nil
	}
	ns := Namespace(t.Name)
	// LoadBalancers and Routes first: their own finalizers free addresses and
	// data-plane config. Their deletion events requeue this Tenant.
	remaining := 0
	for _, list := range []client.ObjectList{&v1.LoadBalancerList{}, &v1.RouteList{}} {
		if err := r.Client.List(ctx, list, client.InNamespace(ns)); err != nil {
			return ctrl.Result{}, err
		}
		if err := meta.EachListItem(list, func(o runtime.Object) error {
			remaining++
			obj := o.(client.Object)
			if obj.GetDeletionTimestamp().IsZero() {
				return client.IgnoreNotFound(r.Client.Delete(ctx, obj))
			}
			return nil
		}); err != nil {
			return ctrl.Result{}, err
		}
	}
	if remaining > 0 {
		log.FromContext(ctx).Info("waiting for tenant objects to be deleted", "namespace", ns, "remaining", remaining)
		return ctrl.Result{}, nil
	}
	// Then the namespace. Its contents go with it; we do not wait for the
	// namespace controller, which may not run (tests, some control planes).
	if err := client.IgnoreNotFound(r.Client.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})); err != nil {
		return ctrl.Result{}, err
	}
	controllerutil.RemoveFinalizer(t, Finalizer)
	forgetToken(t.Name)
	return ctrl.Result{}, r.Client.Update(ctx, t)
}
