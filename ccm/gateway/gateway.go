package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/ccm/ingress"
	"github.com/fleetlb/fleetlb/ccm/secrets"
)

// Controllers are the Gateway API controllers of one tenant cluster.
type Controllers struct {
	// Tenant is the tenant cluster (the ccm's own).
	Tenant client.Client
	// Mgmt reaches the tenant's namespace in the management cluster.
	Mgmt client.Client
	// Namespace is the tenant's namespace in the management cluster.
	Namespace string
	// ClusterName is the tenant cluster's name, recorded as the source.
	ClusterName string
	// Class is the GatewayClass served; DefaultClass when empty. Gateways are
	// ours when their gatewayClassName is this name.
	Class    string
	Recorder recorder.EventRecorder

	// kinds are the route kinds served: HTTPRoute, GRPCRoute, and TLSRoute
	// when the cluster has it.
	kinds []kindOps
}

// Installed reports whether the tenant cluster serves the Gateway API.
func Installed(mgr ctrl.Manager) (bool, error) {
	_, err := mgr.GetRESTMapper().RESTMapping(gwv1.SchemeGroupVersion.WithKind("Gateway").GroupKind(), gwv1.SchemeGroupVersion.Version)
	if meta.IsNoMatchError(err) {
		return false, nil
	}
	return err == nil, err
}

// SetupWithManager registers the GatewayClass, Gateway, HTTPRoute and
// GRPCRoute controllers and the GatewayClass creation.
func (c *Controllers) SetupWithManager(ctx context.Context, mgr ctrl.Manager, mgmt cluster.Cluster) error {
	if c.Class == "" {
		c.Class = DefaultClass
	}
	c.kinds = []kindOps{httpOps, grpcOps}
	if ok, err := tlsInstalled(mgr); err != nil {
		return err
	} else if ok {
		c.kinds = append(c.kinds, tlsOps)
	}
	for _, ops := range c.kinds {
		if err := (&routeReconciler{Controllers: c, ops: ops, reader: mgr.GetClient()}).setup(ctx, mgr, mgmt); err != nil {
			return err
		}
	}
	if err := (&gatewayReconciler{Controllers: c}).setup(ctx, mgr, mgmt); err != nil {
		return err
	}
	if err := ctrl.NewControllerManagedBy(mgr).Named("gatewayclass").
		For(&gwv1.GatewayClass{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.(*gwv1.GatewayClass).Spec.ControllerName == ControllerName
		}))).
		Complete(reconcile.Func(c.reconcileClass)); err != nil {
		return err
	}
	return mgr.Add(c.ensureClass())
}

// reconcileClass accepts our GatewayClasses.
func (c *Controllers) reconcileClass(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var gc gwv1.GatewayClass
	if err := c.Tenant.Get(ctx, req.NamespacedName, &gc); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	before := gc.DeepCopy()
	meta.SetStatusCondition(&gc.Status.Conditions, metav1.Condition{Type: string(gwv1.GatewayClassConditionStatusAccepted), Status: metav1.ConditionTrue,
		Reason: string(gwv1.GatewayClassReasonAccepted), Message: "served by fleetlb-ccm", ObservedGeneration: gc.Generation})
	if equality.Semantic.DeepEqual(before.Status, gc.Status) {
		return reconcile.Result{}, nil
	}
	return reconcile.Result{}, c.Tenant.Status().Patch(ctx, &gc, client.MergeFrom(before))
}

// ensureClass creates our GatewayClass when it is missing (bounded retries).
func (c *Controllers) ensureClass() manager.Runnable {
	return manager.RunnableFunc(func(ctx context.Context) error {
		want := &gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: c.Class}, Spec: gwv1.GatewayClassSpec{ControllerName: ControllerName}}
		var last error
		err := wait.ExponentialBackoffWithContext(ctx, wait.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Steps: 8, Cap: 10 * time.Second},
			func(ctx context.Context) (bool, error) {
				var gc gwv1.GatewayClass
				if last = c.Tenant.Get(ctx, client.ObjectKey{Name: c.Class}, &gc); last == nil {
					if gc.Spec.ControllerName != ControllerName {
						log.FromContext(ctx).Error(nil, "the GatewayClass belongs to another controller; its Gateways are not served", "gatewayClass", c.Class, "controller", gc.Spec.ControllerName)
					}
					return true, nil
				} else if !apierrors.IsNotFound(last) {
					return false, nil
				}
				last = c.Tenant.Create(ctx, want.DeepCopy())
				return last == nil || apierrors.IsAlreadyExists(last), nil
			})
		if err != nil && ctx.Err() == nil {
			// Not fatal: an administrator may create the class; everything else keeps working.
			log.FromContext(ctx).Error(fmt.Errorf("%w (last error: %v)", err, last), "could not create the GatewayClass", "gatewayClass", c.Class)
		}
		return nil
	})
}

// SecretReferrer makes the secrets controller copy the certificates of our
// Gateways' listeners (same-namespace ones; Controllers.SecretReferrer also
// honours ReferenceGrants).
func SecretReferrer(class string) secrets.Referrer {
	if class == "" {
		class = DefaultClass
	}
	refs := func(o client.Object) []types.NamespacedName {
		gw := o.(*gwv1.Gateway)
		if string(gw.Spec.GatewayClassName) != class || !gw.DeletionTimestamp.IsZero() {
			return nil
		}
		var out []types.NamespacedName
		for _, l := range gw.Spec.Listeners {
			if l.Protocol != gwv1.HTTPSProtocolType || l.TLS == nil {
				continue
			}
			for _, ref := range l.TLS.CertificateRefs {
				if k, ok := certKey(gw, ref); ok && !slices.Contains(out, k) {
					out = append(out, k)
				}
			}
		}
		return out
	}
	return secrets.Referrer{
		Object: &gwv1.Gateway{},
		List:   &gwv1.GatewayList{},
		Refs:   refs,
	}
}

// SecretReferrer is SecretReferrer(c.Class) with cross-namespace
// certificates allowed by ReferenceGrants read through reader.
func (c *Controllers) SecretReferrer(reader client.Reader) secrets.Referrer {
	ref := SecretReferrer(c.Class)
	ref.Permitted = func(ctx context.Context, o client.Object, s types.NamespacedName) (bool, error) {
		return refPermitted(ctx, reader, kindGateway, o.GetNamespace(), kindSecret, s)
	}
	// A ReferenceGrant change re-checks the Secrets of its namespace that Gateways name.
	ref.Also = &gwv1.ReferenceGrant{}
	ref.AlsoRefs = func(ctx context.Context, o client.Object) []types.NamespacedName {
		var gws gwv1.GatewayList
		if err := reader.List(ctx, &gws); err != nil {
			return nil
		}
		var out []types.NamespacedName
		for i := range gws.Items {
			for _, k := range ref.Refs(&gws.Items[i]) {
				if k.Namespace == o.GetNamespace() {
					out = append(out, k)
				}
			}
		}
		return out
	}
	return ref
}

// ServiceReferrers make the companion controller keep the companions our
// HTTPRoutes and GRPCRoutes use.
func ServiceReferrers() []ingress.ServiceReferrer {
	return serviceReferrers([]kindOps{httpOps, grpcOps})
}

// ServiceReferrers are those of every route kind served (after SetupWithManager).
func (c *Controllers) ServiceReferrers() []ingress.ServiceReferrer {
	if c.kinds == nil {
		return ServiceReferrers()
	}
	return serviceReferrers(c.kinds)
}

func serviceReferrers(kinds []kindOps) []ingress.ServiceReferrer {
	var out []ingress.ServiceReferrer
	for _, ops := range kinds {
		out = append(out, ingress.ServiceReferrer{Object: ops.newObj(), List: ops.newList(), Refs: func(o client.Object) []types.NamespacedName { return serviceRefs(ops, o) }})
	}
	return out
}

// gatewayReconciler writes Gateway status: addresses from the fleet,
// listener conditions and attached routes.
type gatewayReconciler struct {
	*Controllers
	// secrets reads a listener's Secret uncached: the ccm caches no tenant
	// Secret contents, and a certificate must be checked, not only found.
	secrets client.Reader
}

// indexCerts indexes our Gateways by the Secrets their listeners name.
const indexCerts = "fleetlb.io/listener-certificates"

func (r *gatewayReconciler) setup(ctx context.Context, mgr ctrl.Manager, mgmt cluster.Cluster) error {
	r.secrets = mgr.GetAPIReader()
	certRefs := SecretReferrer(r.Class).Refs
	if err := mgr.GetFieldIndexer().IndexField(ctx, &gwv1.Gateway{}, indexCerts, func(o client.Object) []string {
		var keys []string
		for _, k := range certRefs(o) {
			keys = append(keys, k.String())
		}
		return keys
	}); err != nil {
		return err
	}
	// A Secret appearing or going changes the listeners that name it.
	bySecret := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
		var gws gwv1.GatewayList
		if err := mgr.GetCache().List(ctx, &gws, client.MatchingFields{indexCerts: client.ObjectKeyFromObject(o).String()}); err != nil {
			return nil
		}
		var reqs []reconcile.Request
		for _, gw := range gws.Items {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&gw)})
		}
		return reqs
	})
	toParents := func(ops kindOps) handler.EventHandler {
		return handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			var reqs []reconcile.Request
			for _, k := range parentKeys(ops, o) {
				ns, name, _ := strings.Cut(k, "/")
				reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}})
			}
			return reqs
		})
	}
	all := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
		var gws gwv1.GatewayList
		if err := mgr.GetCache().List(ctx, &gws); err != nil {
			return nil
		}
		var reqs []reconcile.Request
		for _, gw := range gws.Items {
			if string(gw.Spec.GatewayClassName) == r.Class {
				reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&gw)})
			}
		}
		return reqs
	})
	bld := ctrl.NewControllerManagedBy(mgr)
	for _, ops := range r.kinds {
		bld = bld.Watches(ops.newObj(), toParents(ops))
	}
	return bld.
		Named("gateway").
		// Ours, or once ours: a Gateway that left the class still needs cleanup.
		For(&gwv1.Gateway{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return string(o.(*gwv1.Gateway).Spec.GatewayClassName) == r.Class || controllerutil.ContainsFinalizer(o, GatewayFinalizer)
		}))).
		Watches(&gwv1.ReferenceGrant{}, all).
		WatchesMetadata(&corev1.Secret{}, bySecret).
		// The Gateway's LoadBalancer: its address and Programmed come back at once.
		WatchesRawSource(source.Kind(mgmt.GetCache(), &v1.LoadBalancer{}, handler.TypedEnqueueRequestsFromMapFunc(func(_ context.Context, lb *v1.LoadBalancer) []reconcile.Request {
			if ns, name, ok := strings.Cut(lb.Annotations[AnnotationGateway], "/"); ok && lb.Spec.Source.Kind == v1.SourceGateway {
				return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}}}
			}
			return nil
		}))).
		WatchesRawSource(source.Kind(mgmt.GetCache(), &v1.Route{}, handler.TypedEnqueueRequestsFromMapFunc(func(_ context.Context, rt *v1.Route) []reconcile.Request {
			var reqs []reconcile.Request
			for _, k := range strings.Split(rt.Annotations[AnnotationGateways], ",") {
				if ns, name, ok := strings.Cut(k, "/"); ok {
					reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}})
				}
			}
			return reqs
		}))).
		Complete(r)
}

// Reconcile implements reconcile.Reconciler.
func (r *gatewayReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var gw gwv1.Gateway
	if err := r.Tenant.Get(ctx, req.NamespacedName, &gw); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if string(gw.Spec.GatewayClassName) != r.Class || !gw.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.cleanupGateway(ctx, &gw)
	}
	key := req.NamespacedName.String()
	// The finalizer goes on before anything exists outside the cluster.
	if controllerutil.AddFinalizer(&gw, GatewayFinalizer) {
		if err := r.Tenant.Update(ctx, &gw); err != nil {
			return ctrl.Result{}, err
		}
	}
	requested, unsupported := requestedAddress(&gw)
	var lb *v1.LoadBalancer
	if unsupported == "" {
		want, err := r.desiredLoadBalancer(ctx, &gw, requested)
		if err != nil {
			return ctrl.Result{}, err
		}
		if lb, err = r.ensureLoadBalancer(ctx, &gw, want); err != nil {
			return ctrl.Result{}, err
		}
	} else if err := r.cleanupLoadBalancer(ctx, &gw); err != nil {
		return ctrl.Result{}, err
	}

	// Routes attached per listener.
	attached := map[gwv1.SectionName]int32{}
	for _, ops := range r.kinds {
		list := ops.newList()
		if err := r.Tenant.List(ctx, list, client.MatchingFields{indexParents: key}); err != nil {
			return ctrl.Result{}, err
		}
		items, _ := meta.ExtractList(list)
		for _, it := range items {
			o := it.(client.Object)
			counted := map[gwv1.SectionName]bool{}
			for _, p := range ops.common(o).ParentRefs {
				if k, ok := parentGateway(o.GetNamespace(), p); !ok || k.String() != key {
					continue
				}
				att, err := attach(ctx, r.Tenant, &gw, ops.kind, o.GetNamespace(), ops.hosts(o), p)
				if err != nil {
					return ctrl.Result{}, err
				}
				for _, l := range att.listeners {
					if !counted[l.Name] {
						counted[l.Name] = true
						attached[l.Name]++
					}
				}
			}
		}
	}

	// The Gateway's own address and Programmed, from its LoadBalancer.
	addrs, programmed, programmedReason, programmedMsg := addressStatus(lb, requested != "")

	before := gw.DeepCopy()
	st := &gw.Status
	st.Addresses = addrs
	gen := gw.Generation
	set := func(conds *[]metav1.Condition, t string, ok bool, reason, msg string) {
		s := metav1.ConditionTrue
		if !ok {
			s = metav1.ConditionFalse
		}
		meta.SetStatusCondition(conds, metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen})
	}
	invalid := 0 // listeners the fleet cannot serve at all
	for i := range gw.Spec.Listeners {
		if ok, _, _ := listenerAccepted(&gw.Spec.Listeners[i]); !ok {
			invalid++
		}
	}
	switch {
	case unsupported != "":
		set(&st.Conditions, string(gwv1.GatewayConditionAccepted), false, string(gwv1.GatewayReasonUnsupportedAddress), unsupported)
		programmed, programmedReason, programmedMsg = false, string(gwv1.GatewayReasonInvalid), "not accepted"
	case invalid == 0:
		set(&st.Conditions, string(gwv1.GatewayConditionAccepted), true, string(gwv1.GatewayReasonAccepted), "served on its own address by the fleet")
	case invalid < len(gw.Spec.Listeners):
		set(&st.Conditions, string(gwv1.GatewayConditionAccepted), true, string(gwv1.GatewayReasonListenersNotValid),
			fmt.Sprintf("%d of %d listeners are not valid (see their conditions); the others are served", invalid, len(gw.Spec.Listeners)))
	default:
		set(&st.Conditions, string(gwv1.GatewayConditionAccepted), false, string(gwv1.GatewayReasonListenersNotValid), "no listener is valid (see their conditions)")
	}
	set(&st.Conditions, string(gwv1.GatewayConditionProgrammed), programmed, programmedReason, programmedMsg)

	var listeners []gwv1.ListenerStatus
	for i := range gw.Spec.Listeners {
		l := &gw.Spec.Listeners[i]
		var old []metav1.Condition
		for _, ls := range before.Status.Listeners {
			if ls.Name == l.Name {
				old = ls.Conditions
			}
		}
		ls := gwv1.ListenerStatus{Name: l.Name, AttachedRoutes: attached[l.Name], Conditions: slices.Clone(old), SupportedKinds: []gwv1.RouteGroupKind{}}
		kinds, kindsOK := listenerKinds(l)
		for _, k := range kinds {
			ls.SupportedKinds = append(ls.SupportedKinds, gwv1.RouteGroupKind{Group: ptr.To(gwv1.Group(gwv1.GroupName)), Kind: k})
		}
		accepted, acceptedReason, acceptedMsg := listenerAccepted(l)
		resolved, resolvedReason, resolvedMsg := true, string(gwv1.ListenerReasonResolvedRefs), "all references resolved"
		if !kindsOK {
			resolved, resolvedReason, resolvedMsg = false, string(gwv1.ListenerReasonInvalidRouteKinds), "allowedRoutes names route kinds this listener's protocol does not serve"
		}
		if ok, reason, msg, err := r.certificateOK(ctx, &gw, l); err != nil {
			return ctrl.Result{}, err
		} else if !ok {
			resolved, resolvedReason, resolvedMsg = false, reason, msg
		}
		set(&ls.Conditions, string(gwv1.ListenerConditionAccepted), accepted, acceptedReason, acceptedMsg)
		set(&ls.Conditions, string(gwv1.ListenerConditionResolvedRefs), resolved, resolvedReason, resolvedMsg)
		conflictReason, conflictMsg := listenerConflict(&gw, i)
		switch {
		case !accepted || !resolved || conflictReason != "":
			set(&ls.Conditions, string(gwv1.ListenerConditionProgrammed), false, string(gwv1.ListenerReasonInvalid), "listener not served")
		case programmed:
			set(&ls.Conditions, string(gwv1.ListenerConditionProgrammed), true, string(gwv1.ListenerReasonProgrammed), "listener programmed")
		default:
			set(&ls.Conditions, string(gwv1.ListenerConditionProgrammed), false, string(gwv1.ListenerReasonPending), programmedMsg)
		}
		if conflictReason != "" {
			set(&ls.Conditions, string(gwv1.ListenerConditionConflicted), true, string(conflictReason), conflictMsg)
		} else {
			set(&ls.Conditions, string(gwv1.ListenerConditionConflicted), false, string(gwv1.ListenerReasonNoConflicts), "no conflicts")
		}
		listeners = append(listeners, ls)
	}
	st.Listeners = listeners
	if equality.Semantic.DeepEqual(before.Status, gw.Status) {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{}, client.IgnoreNotFound(r.Tenant.Status().Patch(ctx, &gw, client.MergeFrom(before)))
}

// listenerAccepted says whether the fleet can serve a listener's protocol and mode.
func listenerAccepted(l *gwv1.Listener) (bool, string, string) {
	switch {
	case l.Protocol != gwv1.HTTPProtocolType && l.Protocol != gwv1.HTTPSProtocolType && l.Protocol != gwv1.TLSProtocolType:
		return false, string(gwv1.ListenerReasonUnsupportedProtocol), fmt.Sprintf("protocol %s is not supported (HTTP, HTTPS and TLS are)", l.Protocol)
	case l.Protocol == gwv1.HTTPSProtocolType && l.TLS != nil && l.TLS.Mode != nil && *l.TLS.Mode == gwv1.TLSModePassthrough:
		return false, string(gwv1.ListenerReasonUnsupportedValue), "TLS passthrough is not supported on HTTPS listeners (use a TLS listener)"
	case l.Protocol == gwv1.TLSProtocolType && (l.TLS == nil || l.TLS.Mode == nil || *l.TLS.Mode != gwv1.TLSModePassthrough):
		return false, string(gwv1.ListenerReasonUnsupportedValue), "a TLS listener is served in Passthrough mode only (TLSRoute); terminate TLS on an HTTPS listener"
	}
	return true, string(gwv1.ListenerReasonAccepted), "listener accepted"
}

// certificateOK checks an HTTPS listener's certificate reference.
func (r *gatewayReconciler) certificateOK(ctx context.Context, gw *gwv1.Gateway, l *gwv1.Listener) (bool, string, string, error) {
	if l.Protocol != gwv1.HTTPSProtocolType {
		return true, "", "", nil
	}
	if l.TLS == nil || len(l.TLS.CertificateRefs) == 0 {
		return false, string(gwv1.ListenerReasonInvalidCertificateRef), "an HTTPS listener needs a certificateRef", nil
	}
	key, ok := certKey(gw, l.TLS.CertificateRefs[0])
	if !ok {
		return false, string(gwv1.ListenerReasonInvalidCertificateRef), "certificateRefs must name a core Secret", nil
	}
	if ok, err := refPermitted(ctx, r.Tenant, kindGateway, gw.Namespace, kindSecret, key); err != nil {
		return false, "", "", err
	} else if !ok {
		return false, string(gwv1.ListenerReasonRefNotPermitted), fmt.Sprintf("no ReferenceGrant in namespace %s allows Secret %s", key.Namespace, key.Name), nil
	}
	// Only the Secret's metadata is cached (the secrets controller watches it
	// that way); its existence is checked there, its content read directly.
	s := &metav1.PartialObjectMetadata{}
	s.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	if err := r.Tenant.Get(ctx, key, s); apierrors.IsNotFound(err) {
		return false, string(gwv1.ListenerReasonInvalidCertificateRef), fmt.Sprintf("Secret %s not found", key), nil
	} else if err != nil {
		return false, "", "", err
	}
	if r.secrets == nil {
		return true, "", "", nil
	}
	var sec corev1.Secret
	if err := r.secrets.Get(ctx, key, &sec); apierrors.IsNotFound(err) {
		return false, string(gwv1.ListenerReasonInvalidCertificateRef), fmt.Sprintf("Secret %s not found", key), nil
	} else if err != nil {
		return false, "", "", err
	}
	if _, err := tls.X509KeyPair(sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey]); err != nil {
		return false, string(gwv1.ListenerReasonInvalidCertificateRef), fmt.Sprintf("Secret %s has no usable certificate and key: %v", key, err), nil
	}
	return true, "", "", nil
}
