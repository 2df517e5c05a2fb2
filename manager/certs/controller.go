// Package certs asks cert-manager for the TLS certificates tenants do not
// bring themselves. For every TLS Secret name that Routes of a tenant
// namespace reference, when that Secret does not exist (or is one this
// controller had cert-manager issue) and an issuer is named — by the TLS
// entry (Ingress annotations cert-manager.io/cluster-issuer or
// cert-manager.io/issuer) or by the Tenant's spec.defaultIssuer — the
// manager keeps a cert-manager Certificate of the same name whose dnsNames
// are the Route hostnames the tenant owns (status.acceptedHostnames) that
// the entry covers. cert-manager writes the Secret; the route controller
// sees it appear and the fleet serves it by SDS.
//
// A hostname the tenant was refused is never put on a Certificate. A Secret
// the tenant brings (a ccm copy) always wins: its Certificate is removed.
// When no Route references the name any more, the Certificate and the Secret
// cert-manager issued for it are deleted (the manager deletes them itself:
// owner references alone would leak where no garbage collector runs).
//
// When the Certificate CRD is not installed the controller is not started
// (Setup says so); install cert-manager and restart the manager to enable it.
package certs

import (
	"cmp"
	"context"
	"slices"
	"strings"

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/manager/route"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// LabelManaged marks the Certificates this controller owns.
const LabelManaged = "fleetlb.io/managed-certificate"

// indexSecret indexes Routes by each spec.tls[].secretName.
const indexSecret = "fleetlb.io/certs-route-secret"

// Reconciler keeps one Certificate per TLS Secret name that needs one.
type Reconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
	Log      logr.Logger
}

// Installed reports whether the API server serves cert-manager Certificates.
func Installed(mgr ctrl.Manager) (bool, error) {
	gvk := cmv1.SchemeGroupVersion.WithKind(cmv1.CertificateKind)
	_, err := mgr.GetRESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		return false, nil
	}
	return err == nil, err
}

// Setup registers the controller when the Certificate CRD is installed and
// reports whether it did.
func (r *Reconciler) Setup(ctx context.Context, mgr ctrl.Manager) (bool, error) {
	ok, err := Installed(mgr)
	if err != nil || !ok {
		if err == nil {
			r.Log.Info("cert-manager Certificate CRD (cert-manager.io/v1) not installed: no certificates are requested")
		}
		return false, err
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &v1.Route{}, indexSecret, func(o client.Object) []string {
		var out []string
		for _, t := range o.(*v1.Route).Spec.TLS {
			out = append(out, t.SecretName)
		}
		return out
	}); err != nil {
		return false, err
	}
	return true, ctrl.NewControllerManagedBy(mgr).
		Named("route-certificates").
		For(&cmv1.Certificate{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetLabels()[LabelManaged] != ""
		}))).
		Watches(&v1.Route{}, handler.EnqueueRequestsFromMapFunc(r.forRoute)).
		Watches(&v1.Tenant{}, handler.EnqueueRequestsFromMapFunc(r.forTenant)).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			if _, ok := tenant.Of(o.GetNamespace()); !ok {
				return nil
			}
			return []reconcile.Request{{NamespacedName: client.ObjectKeyFromObject(o)}}
		})).
		Complete(r)
}

// forRoute: every Secret name the Route references, and every managed
// Certificate of its namespace (one it no longer references may go).
func (r *Reconciler) forRoute(ctx context.Context, o client.Object) []reconcile.Request {
	rt := o.(*v1.Route)
	var out []reconcile.Request
	for _, t := range rt.Spec.TLS {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: rt.Namespace, Name: t.SecretName}})
	}
	var certs cmv1.CertificateList
	if err := r.Client.List(ctx, &certs, client.InNamespace(rt.Namespace), client.HasLabels{LabelManaged}); err != nil {
		r.Log.Error(err, "listing Certificates", "namespace", rt.Namespace)
	}
	for _, c := range certs.Items {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&c)})
	}
	return out
}

// forTenant: a changed default issuer concerns every TLS entry of the tenant.
func (r *Reconciler) forTenant(ctx context.Context, o client.Object) []reconcile.Request {
	var routes v1.RouteList
	if err := r.Client.List(ctx, &routes, client.InNamespace(tenant.Namespace(o.GetName()))); err != nil {
		r.Log.Error(err, "listing Routes", "tenant", o.GetName())
		return nil
	}
	var out []reconcile.Request
	for i := range routes.Items {
		out = append(out, r.forRoute(ctx, &routes.Items[i])...)
	}
	return out
}

// request is what the Routes referencing one Secret name ask of cert-manager.
type request struct {
	issuer   v1.IssuerRef
	dnsNames []string
	routes   []*v1.Route // that named an issuer for the Secret, oldest first
}

// want returns the Certificate the Routes referencing name call for (nil:
// none) and whether any Route references name at all.
func want(routes []v1.Route, t *v1.Tenant, name string) (req *request, referenced bool) {
	slices.SortFunc(routes, func(a, b v1.Route) int {
		return cmp.Or(a.CreationTimestamp.Compare(b.CreationTimestamp.Time), strings.Compare(a.Name, b.Name))
	})
	for i := range routes {
		rt := &routes[i]
		if !rt.DeletionTimestamp.IsZero() {
			continue
		}
		for _, tl := range rt.Spec.TLS {
			if tl.SecretName != name {
				continue
			}
			referenced = true
			issuer := tl.Issuer
			if issuer == nil && t != nil {
				issuer = t.Spec.DefaultIssuer
			}
			if issuer == nil {
				continue
			}
			var hosts []string
			for _, h := range rt.Status.AcceptedHostnames {
				if slices.Contains(rt.Spec.Hostnames, h) && route.CoveredBy(tl.Hostnames, h) {
					hosts = append(hosts, string(h))
				}
			}
			if len(hosts) == 0 {
				continue // nothing the tenant owns: never ask for a refused name
			}
			if req == nil {
				req = &request{issuer: *issuer} // the oldest Route's issuer wins
			}
			req.dnsNames = append(req.dnsNames, hosts...)
			if !slices.Contains(req.routes, rt) {
				req.routes = append(req.routes, rt)
			}
		}
	}
	if req != nil {
		slices.Sort(req.dnsNames)
		req.dnsNames = slices.Compact(req.dnsNames)
	}
	return req, referenced
}

// certificate is the Certificate that serves req as Secret namespace/name.
func certificate(namespace, name string, req *request) *cmv1.Certificate {
	c := &cmv1.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{LabelManaged: "true"}},
		Spec: cmv1.CertificateSpec{
			SecretName: name,
			DNSNames:   req.dnsNames,
			IssuerRef:  cmmeta.IssuerReference{Group: "cert-manager.io", Kind: cmp.Or(req.issuer.Kind, "ClusterIssuer"), Name: req.issuer.Name},
		},
	}
	for _, rt := range req.routes {
		c.OwnerReferences = append(c.OwnerReferences, metav1.OwnerReference{APIVersion: v1.GroupVersion.String(), Kind: "Route",
			Name: rt.Name, UID: rt.UID, BlockOwnerDeletion: ptr.To(false)})
	}
	return c
}

// Reconcile implements reconcile.Reconciler; the request names a TLS Secret.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	tenantName, ok := tenant.Of(req.Namespace)
	if !ok {
		return ctrl.Result{}, nil
	}
	var t *v1.Tenant
	var tn v1.Tenant
	switch err := r.Client.Get(ctx, types.NamespacedName{Name: tenantName}, &tn); {
	case err == nil:
		t = &tn
	case !apierrors.IsNotFound(err):
		return ctrl.Result{}, err
	}
	var routes v1.RouteList
	if err := r.Client.List(ctx, &routes, client.InNamespace(req.Namespace), client.MatchingFields{indexSecret: req.Name}); err != nil {
		return ctrl.Result{}, err
	}
	wanted, referenced := want(routes.Items, t, req.Name)

	var secret corev1.Secret
	secretExists := true
	if err := r.Client.Get(ctx, req.NamespacedName, &secret); apierrors.IsNotFound(err) {
		secretExists = false
	} else if err != nil {
		return ctrl.Result{}, err
	}
	issuedByUs := secretExists && secret.Annotations[cmv1.CertificateNameKey] == req.Name
	if secretExists && !issuedByUs {
		wanted = nil // the tenant brought its own certificate
	}

	var cur cmv1.Certificate
	curExists := true
	if err := r.Client.Get(ctx, req.NamespacedName, &cur); apierrors.IsNotFound(err) {
		curExists = false
	} else if err != nil {
		return ctrl.Result{}, err
	}
	if curExists && cur.Labels[LabelManaged] == "" {
		// Someone else's Certificate of that name: leave it, and its Secret.
		if wanted != nil {
			r.Recorder.Eventf(wanted.routes[0], nil, corev1.EventTypeWarning, "CertificateConflict", "RequestCertificate",
				"a Certificate %s not made by fleetlb already exists in %s; not requesting one", req.Name, req.Namespace)
		}
		return ctrl.Result{}, nil
	}

	switch {
	case wanted == nil && curExists:
		if err := r.Client.Delete(ctx, &cur); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, err
		}
		r.Log.Info("deleted Certificate", "namespace", req.Namespace, "name", req.Name)
	case wanted != nil && !curExists:
		c := certificate(req.Namespace, req.Name, wanted)
		if err := r.Client.Create(ctx, c); apierrors.IsAlreadyExists(err) {
			return ctrl.Result{}, nil // our cache lags; its event brings us back
		} else if err != nil {
			return ctrl.Result{}, err
		}
		r.Recorder.Eventf(wanted.routes[0], c, corev1.EventTypeNormal, "CertificateRequested", "RequestCertificate",
			"asked %s %s for a certificate for %s (Secret %s)", c.Spec.IssuerRef.Kind, c.Spec.IssuerRef.Name, strings.Join(c.Spec.DNSNames, ", "), req.Name)
		r.Log.Info("created Certificate", "namespace", req.Namespace, "name", req.Name, "dnsNames", c.Spec.DNSNames)
	case wanted != nil:
		c := certificate(req.Namespace, req.Name, wanted)
		if equality.Semantic.DeepEqual(cur.Spec.DNSNames, c.Spec.DNSNames) && cur.Spec.IssuerRef == c.Spec.IssuerRef &&
			cur.Spec.SecretName == c.Spec.SecretName && equality.Semantic.DeepEqual(cur.OwnerReferences, c.OwnerReferences) {
			break
		}
		patch := client.MergeFrom(cur.DeepCopy())
		cur.Spec.DNSNames, cur.Spec.IssuerRef, cur.Spec.SecretName, cur.OwnerReferences =
			c.Spec.DNSNames, c.Spec.IssuerRef, c.Spec.SecretName, c.OwnerReferences
		if err := r.Client.Patch(ctx, &cur, patch); err != nil {
			return ctrl.Result{}, err
		}
		r.Log.Info("updated Certificate", "namespace", req.Namespace, "name", req.Name, "dnsNames", c.Spec.DNSNames)
	}

	// cert-manager leaves a Certificate's Secret behind; nothing uses it now.
	if !referenced && issuedByUs && secret.DeletionTimestamp.IsZero() {
		if err := r.Client.Delete(ctx, &secret); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, err
		}
		r.Log.Info("deleted the Secret of a removed Certificate", "namespace", req.Namespace, "name", req.Name)
	}
	return ctrl.Result{}, nil
}
