package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/ccm/ingress"
)

// Labels and annotations on management Routes made from Gateway API routes.
const (
	labelSourceKind      = ingress.LabelSourceKind
	labelSourceNamespace = ingress.LabelSourceNamespace
	// AnnotationGateways lists the Gateways (namespace/name, comma-separated)
	// a Route is served through, so Gateway status can find its addresses.
	AnnotationGateways = "fleetlb.io/gateways"
)

// Cache indexes on HTTPRoutes and GRPCRoutes.
const (
	indexParents  = "fleetlb.io/parent-gateways"
	indexBackends = "fleetlb.io/route-backends"
)

// kindOps adapts HTTPRoute and GRPCRoute to one reconciler.
type kindOps struct {
	kind    gwv1.Kind
	source  v1.RouteSourceKind
	prefix  string
	newObj  func() client.Object
	newList func() client.ObjectList
	common  func(client.Object) *gwv1.CommonRouteSpec
	hosts   func(client.Object) []gwv1.Hostname
	status  func(client.Object) *gwv1.RouteStatus
	refs    func(client.Object) []gwv1.BackendObjectReference
	rules   func(client.Object, backendResolver) ([]v1.RouteRule, []problem)
}

var httpOps = kindOps{
	kind: kindHTTPRoute, source: v1.SourceHTTPRoute, prefix: "httproute",
	newObj:  func() client.Object { return &gwv1.HTTPRoute{} },
	newList: func() client.ObjectList { return &gwv1.HTTPRouteList{} },
	common:  func(o client.Object) *gwv1.CommonRouteSpec { return &o.(*gwv1.HTTPRoute).Spec.CommonRouteSpec },
	hosts:   func(o client.Object) []gwv1.Hostname { return o.(*gwv1.HTTPRoute).Spec.Hostnames },
	status:  func(o client.Object) *gwv1.RouteStatus { return &o.(*gwv1.HTTPRoute).Status.RouteStatus },
	refs: func(o client.Object) []gwv1.BackendObjectReference {
		var out []gwv1.BackendObjectReference
		for _, r := range o.(*gwv1.HTTPRoute).Spec.Rules {
			for _, b := range r.BackendRefs {
				out = append(out, b.BackendObjectReference)
			}
		}
		return out
	},
	rules: func(o client.Object, res backendResolver) ([]v1.RouteRule, []problem) {
		return httpRules(&o.(*gwv1.HTTPRoute).Spec, res)
	},
}

var grpcOps = kindOps{
	kind: kindGRPCRoute, source: v1.SourceGRPCRoute, prefix: "grpcroute",
	newObj:  func() client.Object { return &gwv1.GRPCRoute{} },
	newList: func() client.ObjectList { return &gwv1.GRPCRouteList{} },
	common:  func(o client.Object) *gwv1.CommonRouteSpec { return &o.(*gwv1.GRPCRoute).Spec.CommonRouteSpec },
	hosts:   func(o client.Object) []gwv1.Hostname { return o.(*gwv1.GRPCRoute).Spec.Hostnames },
	status:  func(o client.Object) *gwv1.RouteStatus { return &o.(*gwv1.GRPCRoute).Status.RouteStatus },
	refs: func(o client.Object) []gwv1.BackendObjectReference {
		var out []gwv1.BackendObjectReference
		for _, r := range o.(*gwv1.GRPCRoute).Spec.Rules {
			for _, b := range r.BackendRefs {
				out = append(out, b.BackendObjectReference)
			}
		}
		return out
	},
	rules: func(o client.Object, res backendResolver) ([]v1.RouteRule, []problem) {
		return grpcRules(&o.(*gwv1.GRPCRoute).Spec, res)
	},
}

// RouteName is the management Route for a Gateway API route: `<kind>.<namespace>.<name>`.
func RouteName(prefix, namespace, name string) string {
	n := prefix + "." + namespace + "." + name
	if len(n) <= 253 {
		return n
	}
	sum := sha256.Sum256([]byte(n))
	return n[:253-17] + "-" + hex.EncodeToString(sum[:8])
}

// serviceRefs are the Services a route uses (their companions stay while
// it names them, whether or not one of our Gateways serves it).
func serviceRefs(ops kindOps, o client.Object) []types.NamespacedName {
	var out []types.NamespacedName
	for _, r := range ops.refs(o) {
		if (r.Group != nil && *r.Group != "") || (r.Kind != nil && *r.Kind != kindService) {
			continue
		}
		k := types.NamespacedName{Namespace: o.GetNamespace(), Name: string(r.Name)}
		if r.Namespace != nil {
			k.Namespace = string(*r.Namespace)
		}
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

func parentKeys(ops kindOps, o client.Object) []string {
	var keys []string
	for _, p := range ops.common(o).ParentRefs {
		if k, ok := parentGateway(o.GetNamespace(), p); ok && !slices.Contains(keys, k.String()) {
			keys = append(keys, k.String())
		}
	}
	return keys
}

// routeReconciler syncs the HTTPRoutes or GRPCRoutes attached to our Gateways.
type routeReconciler struct {
	*Controllers
	ops kindOps
	// apiReader checks ReferenceGrants without caching more than needed.
	reader client.Reader
	// refusals remembers the fleet's verdict last told per route, so each
	// one is a Warning event once, not on every reconcile.
	refusals sync.Map // "<namespace>/<name>" → reason and message
}

func (r *routeReconciler) setup(ctx context.Context, mgr ctrl.Manager, mgmt cluster.Cluster) error {
	ops := r.ops
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, ops.newObj(), indexParents, func(o client.Object) []string { return parentKeys(ops, o) }); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, ops.newObj(), indexBackends, func(o client.Object) []string {
		var keys []string
		for _, k := range serviceRefs(ops, o) {
			keys = append(keys, k.String())
		}
		return keys
	}); err != nil {
		return err
	}
	cache := mgr.GetCache()
	byIndex := func(ctx context.Context, index, key string) []reconcile.Request {
		list := ops.newList()
		if err := cache.List(ctx, list, client.MatchingFields{index: key}); err != nil {
			log.FromContext(ctx).Error(err, "listing routes", "index", index)
			return nil
		}
		items, _ := meta.ExtractList(list)
		reqs := make([]reconcile.Request, 0, len(items))
		for _, it := range items {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(it.(client.Object))})
		}
		return reqs
	}
	// Every route of a namespace: a ReferenceGrant or a Namespace's labels changed.
	inNamespace := func(ctx context.Context, ns string) []reconcile.Request {
		list := ops.newList()
		if err := cache.List(ctx, list, client.InNamespace(ns)); err != nil {
			return nil
		}
		items, _ := meta.ExtractList(list)
		var reqs []reconcile.Request
		for _, it := range items {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(it.(client.Object))})
		}
		return reqs
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named(string(ops.prefix)).
		For(ops.newObj()).
		Watches(&gwv1.Gateway{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return byIndex(ctx, indexParents, client.ObjectKeyFromObject(o).String())
		})).
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			name := o.GetName()
			if of := o.GetLabels()[ingress.LabelCompanionOf]; of != "" {
				name = of
			}
			return byIndex(ctx, indexBackends, types.NamespacedName{Namespace: o.GetNamespace(), Name: name}.String())
		})).
		Watches(&gwv1.ReferenceGrant{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			var reqs []reconcile.Request
			for _, f := range o.(*gwv1.ReferenceGrant).Spec.From {
				if f.Kind == ops.kind {
					reqs = append(reqs, inNamespace(ctx, string(f.Namespace))...)
				}
			}
			return reqs
		})).
		WatchesRawSource(source.Kind(mgmt.GetCache(), &v1.Route{}, handler.TypedEnqueueRequestsFromMapFunc(func(_ context.Context, rt *v1.Route) []reconcile.Request {
			if rt.Spec.Source.Kind != ops.source {
				return nil
			}
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: rt.Spec.Source.Namespace, Name: rt.Spec.Source.Name}}}
		}))).
		Complete(r)
}

// ourParent is one parentRef of the route that names one of our Gateways.
type ourParent struct {
	ref gwv1.ParentReference
	gw  *gwv1.Gateway
	att attachment
}

// Reconcile implements reconcile.Reconciler.
func (r *routeReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	ops := r.ops
	obj := ops.newObj()
	switch err := r.Tenant.Get(ctx, req.NamespacedName, obj); {
	case apierrors.IsNotFound(err):
		r.refusals.Delete(req.Namespace + "/" + req.Name)
		_, err := r.deleteRoutes(ctx, ops.source, req.Namespace, req.Name, "")
		return ctrl.Result{}, err
	case err != nil:
		return ctrl.Result{}, err
	}
	var parents []ourParent
	for _, p := range ops.common(obj).ParentRefs {
		key, ok := parentGateway(obj.GetNamespace(), p)
		if !ok {
			continue
		}
		var gw gwv1.Gateway
		if err := r.Tenant.Get(ctx, key, &gw); apierrors.IsNotFound(err) {
			continue
		} else if err != nil {
			return ctrl.Result{}, err
		}
		if string(gw.Spec.GatewayClassName) != r.Class {
			continue
		}
		att, err := attach(ctx, r.Tenant, &gw, ops.kind, obj.GetNamespace(), ops.hosts(obj), p)
		if err != nil {
			return ctrl.Result{}, err
		}
		parents = append(parents, ourParent{ref: p, gw: &gw, att: att})
	}
	if !obj.GetDeletionTimestamp().IsZero() || len(parents) == 0 {
		return ctrl.Result{}, r.cleanup(ctx, obj)
	}
	// The listeners that took the route, per Gateway (its LoadBalancer). The
	// manager intersects the route's own hostnames with each listener's.
	var routeParents []v1.RouteParent
	var gateways []string
	for _, p := range parents {
		if len(p.att.listeners) == 0 {
			continue
		}
		gateways = append(gateways, client.ObjectKeyFromObject(p.gw).String())
		lb := GatewayLoadBalancerName(p.gw.Namespace, p.gw.Name)
		i := slices.IndexFunc(routeParents, func(rp v1.RouteParent) bool { return rp.LoadBalancer == lb })
		if i < 0 {
			routeParents = append(routeParents, v1.RouteParent{LoadBalancer: lb})
			i = len(routeParents) - 1
		}
		for _, l := range p.att.listeners {
			if !servedListener(p.gw, l.Name) {
				continue // not in the Gateway's LoadBalancer
			}
			if !slices.Contains(routeParents[i].Listeners, string(l.Name)) {
				routeParents[i].Listeners = append(routeParents[i].Listeners, string(l.Name))
			}
		}
	}
	routeParents = slices.DeleteFunc(routeParents, func(rp v1.RouteParent) bool { return len(rp.Listeners) == 0 })
	slices.Sort(gateways)
	gateways = slices.Compact(gateways)
	slices.SortFunc(routeParents, func(a, b v1.RouteParent) int { return strings.Compare(a.LoadBalancer, b.LoadBalancer) })
	var hostnames []v1.Hostname
	for _, h := range ops.hosts(obj) {
		if !slices.Contains(hostnames, v1.Hostname(h)) {
			hostnames = append(hostnames, v1.Hostname(h))
		}
	}

	companions := map[string]*corev1.Service{}
	rules, problems := ops.rules(obj, func(ref gwv1.BackendObjectReference, weight *int32, proto v1.BackendProtocol) (*v1.RouteBackend, *problem) {
		return r.resolve(ctx, ops.kind, obj.GetNamespace(), ref, weight, proto, companions)
	})

	name := RouteName(ops.prefix, obj.GetNamespace(), obj.GetName())
	var served *v1.Route
	if len(routeParents) > 0 && len(rules) > 0 {
		if len(hostnames) > 64 {
			problems = append(problems, problem{gwv1.RouteConditionAccepted, gwv1.RouteReasonUnsupportedValue, "more than 64 hostnames; the first 64 are served"})
			hostnames = hostnames[:64]
		}
		spec := v1.RouteSpec{
			Source: v1.RouteSource{Kind: ops.source, Cluster: r.ClusterName, Namespace: obj.GetNamespace(), Name: obj.GetName(),
				UID: string(obj.GetUID()), Generation: obj.GetGeneration()},
			Hostnames: hostnames,
			Parents:   routeParents,
			Rules:     rules,
		}
		rt, err := r.ensureRoute(ctx, obj, name, spec, strings.Join(gateways, ","))
		if err != nil {
			return ctrl.Result{}, err
		}
		served = rt
	} else if _, err := r.deleteRoutes(ctx, ops.source, obj.GetNamespace(), obj.GetName(), ""); err != nil {
		return ctrl.Result{}, err
	}
	if len(rules) == 0 {
		problems = append(problems, problem{gwv1.RouteConditionAccepted, gwv1.RouteReasonUnsupportedValue, "no rule can be served"})
	}
	return ctrl.Result{}, r.writeStatus(ctx, obj, parents, problems, served)
}

// certKey is the Secret a certificateRef names, when it names a Secret.
func certKey(gw *gwv1.Gateway, ref gwv1.SecretObjectReference) (types.NamespacedName, bool) {
	if (ref.Group != nil && *ref.Group != "") || (ref.Kind != nil && *ref.Kind != kindSecret) {
		return types.NamespacedName{}, false
	}
	key := types.NamespacedName{Namespace: gw.Namespace, Name: string(ref.Name)}
	if ref.Namespace != nil {
		key.Namespace = string(*ref.Namespace)
	}
	return key, true
}

// resolve finds the node port of a backendRef.
func (r *routeReconciler) resolve(ctx context.Context, kind gwv1.Kind, ns string, ref gwv1.BackendObjectReference, weight *int32, proto v1.BackendProtocol, companions map[string]*corev1.Service) (*v1.RouteBackend, *problem) {
	bad := func(reason gwv1.RouteConditionReason, format string, args ...any) (*v1.RouteBackend, *problem) {
		return nil, &problem{gwv1.RouteConditionResolvedRefs, reason, fmt.Sprintf(format, args...)}
	}
	if (ref.Group != nil && *ref.Group != "") || (ref.Kind != nil && *ref.Kind != kindService) {
		return bad(gwv1.RouteReasonInvalidKind, "backend %s: only Services are supported", ref.Name)
	}
	key := types.NamespacedName{Namespace: ns, Name: string(ref.Name)}
	if ref.Namespace != nil {
		key.Namespace = string(*ref.Namespace)
	}
	if ok, err := refPermitted(ctx, r.reader, kind, ns, kindService, key); err != nil {
		return nil, nil
	} else if !ok {
		return bad(gwv1.RouteReasonRefNotPermitted, "backend %s: no ReferenceGrant in namespace %s allows it", key, key.Namespace)
	}
	if ref.Port == nil {
		return bad(gwv1.RouteReasonUnsupportedValue, "backend %s: a port is required", key)
	}
	var svc corev1.Service
	if err := r.Tenant.Get(ctx, key, &svc); apierrors.IsNotFound(err) {
		return bad(gwv1.RouteReasonBackendNotFound, "backend Service %s not found", key)
	} else if err != nil {
		return nil, nil
	}
	i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == int32(*ref.Port) })
	if i < 0 || svc.Spec.Type == corev1.ServiceTypeExternalName {
		return bad(gwv1.RouteReasonBackendNotFound, "backend Service %s has no port %d the fleet can reach", key, *ref.Port)
	}
	port := svc.Spec.Ports[i]
	rb := &v1.RouteBackend{ServiceName: svc.Name, ServicePort: ptr.To(v1.PortNumber(port.Port)), Weight: ptr.To(ptr.Deref(weight, 1)), Protocol: proto}
	if proto == v1.BackendHTTP && port.AppProtocol != nil && (*port.AppProtocol == "kubernetes.io/h2c" || *port.AppProtocol == "h2c") {
		rb.Protocol = v1.BackendHTTP2
	}
	if port.NodePort != 0 {
		rb.NodePort = v1.PortNumber(port.NodePort)
		return rb, nil
	}
	c := companions[key.String()]
	if c == nil {
		var err error
		if c, err = ingress.EnsureCompanion(ctx, r.Tenant, &svc); err != nil {
			return bad(gwv1.RouteReasonBackendNotFound, "backend %s: %v", key, err)
		} else if c == nil {
			return nil, nil
		}
		companions[key.String()] = c
	}
	for _, p := range c.Spec.Ports {
		if p.Port == port.Port && p.Protocol == port.Protocol && p.NodePort != 0 {
			rb.NodePort = v1.PortNumber(p.NodePort)
			return rb, nil
		}
	}
	return nil, nil
}

// ensureRoute creates or updates the management Route.
func (r *routeReconciler) ensureRoute(ctx context.Context, obj client.Object, name string, spec v1.RouteSpec, gateways string) (*v1.Route, error) {
	rt := &v1.Route{ObjectMeta: metav1.ObjectMeta{
		Namespace: r.Namespace, Name: name,
		Labels:      map[string]string{labelSourceKind: string(spec.Source.Kind), labelSourceNamespace: obj.GetNamespace()},
		Annotations: map[string]string{AnnotationGateways: gateways},
	}, Spec: spec}
	var existing v1.Route
	switch err := r.Mgmt.Get(ctx, client.ObjectKeyFromObject(rt), &existing); {
	case apierrors.IsNotFound(err):
		switch err := r.Mgmt.Create(ctx, rt); {
		case apierrors.IsAlreadyExists(err):
			return nil, nil
		case apierrors.IsInvalid(err):
			r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, "InvalidRoute", "SyncRoute", "the fleet refuses route %s: %v", name, err)
			return nil, nil
		case err != nil:
			return nil, err
		}
		log.FromContext(ctx).V(1).Info("created Route", "route", name)
		return rt, nil
	case err != nil:
		return nil, err
	case existing.Spec.Source.UID != spec.Source.UID:
		if existing.DeletionTimestamp.IsZero() {
			if err := r.Mgmt.Delete(ctx, &existing); client.IgnoreNotFound(err) != nil {
				return nil, err
			}
		}
		return nil, nil
	}
	if equality.Semantic.DeepEqual(existing.Spec, rt.Spec) && equality.Semantic.DeepEqual(existing.Labels, rt.Labels) &&
		existing.Annotations[AnnotationGateways] == gateways {
		return &existing, nil
	}
	patch := client.MergeFrom(existing.DeepCopy())
	existing.Spec, existing.Labels = rt.Spec, rt.Labels
	if existing.Annotations == nil {
		existing.Annotations = map[string]string{}
	}
	existing.Annotations[AnnotationGateways] = gateways
	if err := r.Mgmt.Patch(ctx, &existing, patch); apierrors.IsInvalid(err) {
		r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, "InvalidRoute", "SyncRoute", "the fleet refuses route %s: %v", name, err)
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	return &existing, nil
}

// deleteRoutes deletes the Routes of a source except keep; it reports whether any remain.
func (r *Controllers) deleteRoutes(ctx context.Context, kind v1.RouteSourceKind, ns, name, keep string) (bool, error) {
	var list v1.RouteList
	if err := r.Mgmt.List(ctx, &list, client.InNamespace(r.Namespace), client.MatchingLabels{labelSourceKind: string(kind), labelSourceNamespace: ns}); err != nil {
		return false, err
	}
	remaining := false
	for i := range list.Items {
		rt := &list.Items[i]
		if rt.Spec.Source.Kind != kind || rt.Spec.Source.Name != name || rt.Name == keep {
			continue
		}
		remaining = true
		if rt.DeletionTimestamp.IsZero() {
			if err := r.Mgmt.Delete(ctx, rt); client.IgnoreNotFound(err) != nil {
				return true, err
			}
		}
	}
	return remaining, nil
}

// cleanup removes the Route, then our parent statuses and the finalizer
// an older ccm set. No finalizer holds a route: its deletion event, or the
// management Route's own event when the ccm starts, removes its Route (a
// route that is gone is reconciled like any other), and a finalizer would
// keep a deleted route visible for as long as the fleet takes, so a client
// that re-creates it by name meanwhile would update the dying object and
// lose its route.
func (r *routeReconciler) cleanup(ctx context.Context, obj client.Object) error {
	if _, err := r.deleteRoutes(ctx, r.ops.source, obj.GetNamespace(), obj.GetName(), ""); err != nil {
		return err
	}
	if obj.GetDeletionTimestamp().IsZero() {
		if err := r.writeStatus(ctx, obj, nil, nil, nil); err != nil {
			return err
		}
	}
	if controllerutil.RemoveFinalizer(obj, Finalizer) {
		return client.IgnoreNotFound(r.Tenant.Update(ctx, obj))
	}
	return nil
}

// writeStatus sets one parent status per parentRef to our Gateways, leaves
// other controllers' entries alone and drops our stale ones; written only on change.
func (r *routeReconciler) writeStatus(ctx context.Context, obj client.Object, parents []ourParent, problems []problem, served *v1.Route) error {
	before := obj.DeepCopyObject().(client.Object)
	st := r.ops.status(obj)
	kept := []gwv1.RouteParentStatus{} // parents is a required list
	for _, ps := range st.Parents {
		if ps.ControllerName != ControllerName {
			kept = append(kept, ps)
		}
	}
	gen := obj.GetGeneration()
	// The fleet's own verdict (hostname ownership, Secrets) for this spec.
	var fleet *metav1.Condition
	if served != nil && served.Status.ObservedGeneration == served.Generation {
		if c := meta.FindStatusCondition(served.Status.Conditions, v1.ConditionAccepted); c != nil && c.Status == metav1.ConditionFalse {
			fleet = c
		}
	}
	r.tellRefusal(obj, served)
	var accepted, refs *problem
	for i := range problems {
		p := &problems[i]
		if p.cond == gwv1.RouteConditionResolvedRefs && refs == nil {
			refs = p
		}
		if p.cond == gwv1.RouteConditionAccepted && accepted == nil {
			accepted = p
		}
	}
	for _, p := range parents {
		var old []metav1.Condition
		for _, ps := range st.Parents {
			if ps.ControllerName == ControllerName && equality.Semantic.DeepEqual(ps.ParentRef, p.ref) {
				old = ps.Conditions
			}
		}
		conds := slices.Clone(old)
		set := func(t gwv1.RouteConditionType, ok bool, reason gwv1.RouteConditionReason, msg string) {
			s := metav1.ConditionTrue
			if !ok {
				s = metav1.ConditionFalse
			}
			meta.SetStatusCondition(&conds, metav1.Condition{Type: string(t), Status: s, Reason: string(reason), Message: msg, ObservedGeneration: gen})
		}
		switch {
		case len(p.att.listeners) == 0:
			set(gwv1.RouteConditionAccepted, false, p.att.reason, p.att.msg)
		case fleet != nil:
			set(gwv1.RouteConditionAccepted, false, gwv1.RouteConditionReason(fleet.Reason), fleet.Message)
		case accepted != nil && served == nil:
			set(gwv1.RouteConditionAccepted, false, accepted.reason, accepted.msg)
		default:
			set(gwv1.RouteConditionAccepted, true, gwv1.RouteReasonAccepted, "served by the fleet")
		}
		if refs != nil {
			set(gwv1.RouteConditionResolvedRefs, false, refs.reason, refs.msg)
		} else {
			set(gwv1.RouteConditionResolvedRefs, true, gwv1.RouteReasonResolvedRefs, "all references resolved")
		}
		if accepted != nil && served != nil {
			set(gwv1.RouteConditionPartiallyInvalid, true, accepted.reason, accepted.msg)
		} else {
			meta.RemoveStatusCondition(&conds, string(gwv1.RouteConditionPartiallyInvalid))
		}
		kept = append(kept, gwv1.RouteParentStatus{ParentRef: p.ref, ControllerName: ControllerName, Conditions: conds})
	}
	st.Parents = kept
	if equality.Semantic.DeepEqual(r.ops.status(before).Parents, st.Parents) {
		return nil
	}
	return client.IgnoreNotFound(r.Tenant.Status().Patch(ctx, obj, client.MergeFrom(before)))
}

// tellRefusal turns the fleet's refusal of the route (all of it, or some
// hostnames) into a Warning event on the tenant's route, once per change.
func (r *routeReconciler) tellRefusal(obj client.Object, served *v1.Route) {
	key := obj.GetNamespace() + "/" + obj.GetName()
	if served == nil || served.Status.ObservedGeneration != served.Generation {
		return // not yet judged for this spec
	}
	c := meta.FindStatusCondition(served.Status.Conditions, v1.ConditionAccepted)
	if c == nil || c.Reason == v1.ReasonAccepted {
		r.refusals.Delete(key)
		return
	}
	told := c.Reason + "\n" + c.Message
	if last, ok := r.refusals.Swap(key, told); ok && last == told {
		return
	}
	r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, c.Reason, "SyncRoute", "the fleet refuses %s: %s", servedPart(c), c.Message)
}

func servedPart(c *metav1.Condition) string {
	if c.Status == metav1.ConditionFalse {
		return "the route"
	}
	return "part of the route"
}
