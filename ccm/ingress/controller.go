// Package ingress is the ccm's Ingress controller: every Ingress of the class
// `fleetlb` becomes typed Routes in the tenant's namespace of the management
// cluster (see desiredRoutes for the mapping), ClusterIP backends get a
// companion NodePort Service, and the fleet's addresses and refusals come back
// as the Ingress's status and events.
package ingress

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// Labels on management Routes made from Ingresses.
const (
	LabelSourceKind      = "fleetlb.io/source-kind"
	LabelSourceNamespace = "fleetlb.io/source-namespace"
)

// Reconciler syncs one tenant cluster's Ingresses of our class.
type Reconciler struct {
	// Tenant is the tenant cluster (the ccm's own).
	Tenant client.Client
	// Mgmt reaches the tenant's namespace in the management cluster.
	Mgmt client.Client
	// Namespace is the tenant's namespace in the management cluster.
	Namespace string
	// ClusterName is the tenant cluster's name, recorded as the source.
	ClusterName string
	// Class is the IngressClass served; DefaultClass when empty.
	Class    string
	Recorder recorder.EventRecorder

	// reported remembers the last problem reason told per Route condition, so
	// an Event is emitted when it changes, not on every status write.
	reported sync.Map // "<route>/<condition type>" → reason
}

// SetupWithManager registers the controller and the Ingress backend index;
// mgmt is the management cluster, whose Route status changes are copied back
// as soon as they happen.
func (r *Reconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager, mgmt cluster.Cluster) error {
	if r.Class == "" {
		r.Class = DefaultClass
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &networkingv1.Ingress{}, indexBackends, func(o client.Object) []string {
		var keys []string
		for _, k := range ServiceRefs(o.(*networkingv1.Ingress), r.Class) {
			keys = append(keys, k.String())
		}
		return keys
	}); err != nil {
		return err
	}
	reader := mgr.GetCache()
	// A Service (or its companion) change reaches the Ingresses that use it.
	toIngresses := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
		name := o.GetName()
		if of := o.GetLabels()[LabelCompanionOf]; of != "" {
			name = of
		}
		var list networkingv1.IngressList
		key := types.NamespacedName{Namespace: o.GetNamespace(), Name: name}.String()
		if err := reader.List(ctx, &list, client.InNamespace(o.GetNamespace()), client.MatchingFields{indexBackends: key}); err != nil {
			log.FromContext(ctx).Error(err, "listing Ingresses of a Service", "service", key)
			return nil
		}
		reqs := make([]reconcile.Request, 0, len(list.Items))
		for _, ing := range list.Items {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&ing)})
		}
		return reqs
	})
	toIngress := handler.TypedEnqueueRequestsFromMapFunc(func(_ context.Context, rt *v1.Route) []reconcile.Request {
		if rt.Spec.Source.Kind != v1.SourceIngress {
			return nil
		}
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: rt.Spec.Source.Namespace, Name: rt.Spec.Source.Name}}}
	})
	return ctrl.NewControllerManagedBy(mgr).
		For(&networkingv1.Ingress{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return Served(o.(*networkingv1.Ingress), r.Class)
		}))).
		Watches(&corev1.Service{}, toIngresses).
		WatchesRawSource(source.Kind(mgmt.GetCache(), &v1.Route{}, toIngress)).
		Named("ingress").
		Complete(r)
}

// Reconcile implements reconcile.Reconciler.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var ing networkingv1.Ingress
	switch err := r.Tenant.Get(ctx, req.NamespacedName, &ing); {
	case apierrors.IsNotFound(err):
		// Gone without our cleanup (finalizer removed by hand): drop its Routes.
		_, err := r.deleteRoutes(ctx, req.Namespace, req.Name, nil)
		return ctrl.Result{}, err
	case err != nil:
		return ctrl.Result{}, err
	}
	if !ing.DeletionTimestamp.IsZero() || !ours(&ing, r.Class) {
		return ctrl.Result{}, r.cleanup(ctx, &ing)
	}
	// The finalizer goes on before anything exists outside the cluster.
	if controllerutil.AddFinalizer(&ing, Finalizer) {
		if err := r.Tenant.Update(ctx, &ing); err != nil {
			return ctrl.Result{}, err
		}
	}

	// Companions made in this pass are remembered: the cache does not have them yet.
	companions := map[string]*corev1.Service{}
	routes, problems := desiredRoutes(&ing, r.ClusterName, func(b *networkingv1.IngressBackend) (*v1.RouteBackend, error) {
		return r.resolve(ctx, &ing, b, companions)
	})
	for _, p := range problems {
		r.Recorder.Eventf(&ing, nil, corev1.EventTypeWarning, "InvalidIngress", "SyncRoute", "%s", p)
	}
	keep := map[string]bool{}
	var served []*v1.Route
	for _, want := range routes {
		keep[want.Name] = true
		rt, err := r.ensureRoute(ctx, &ing, want)
		if err != nil {
			return ctrl.Result{}, err
		}
		if rt != nil {
			served = append(served, rt)
		}
	}
	if _, err := r.deleteRoutes(ctx, ing.Namespace, ing.Name, keep); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, r.copyStatus(ctx, &ing, served)
}

func routeLabels(ing *networkingv1.Ingress) map[string]string {
	return map[string]string{LabelSourceKind: string(v1.SourceIngress), LabelSourceNamespace: ing.Namespace}
}

// ensureRoute creates or updates one Route; nil when it is not (yet) there to report on.
func (r *Reconciler) ensureRoute(ctx context.Context, ing *networkingv1.Ingress, want namedRoute) (*v1.Route, error) {
	rt := &v1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: want.Name, Labels: routeLabels(ing)}, Spec: want.Spec}
	var existing v1.Route
	switch err := r.Mgmt.Get(ctx, client.ObjectKeyFromObject(rt), &existing); {
	case apierrors.IsNotFound(err):
		switch err := r.Mgmt.Create(ctx, rt); {
		case apierrors.IsAlreadyExists(err):
			return nil, nil // our cache lags; its create event brings this Ingress back
		case apierrors.IsInvalid(err):
			// Retrying cannot help; the user has to change the Ingress.
			r.Recorder.Eventf(ing, nil, corev1.EventTypeWarning, "InvalidIngress", "SyncRoute", "the fleet refuses route %s: %v", rt.Name, err)
			return nil, nil
		case err != nil:
			return nil, err
		}
		log.FromContext(ctx).V(1).Info("created Route", "route", rt.Name)
		r.Recorder.Eventf(ing, nil, corev1.EventTypeNormal, "Sync", "SyncRoute", "requested route %s from the fleet for %v", rt.Name, rt.Spec.Hostnames)
		return rt, nil
	case err != nil:
		return nil, err
	case existing.Spec.Source.Kind != v1.SourceIngress || existing.Spec.Source.Namespace != ing.Namespace || existing.Spec.Source.Name != ing.Name:
		r.Recorder.Eventf(ing, nil, corev1.EventTypeWarning, "RouteConflict", "SyncRoute", "route %s already exists for %s %s/%s",
			rt.Name, existing.Spec.Source.Kind, existing.Spec.Source.Namespace, existing.Spec.Source.Name)
		return nil, nil
	case existing.Spec.Source.UID != string(ing.UID):
		// Left over from an earlier Ingress of the same name: replace it.
		if existing.DeletionTimestamp.IsZero() {
			if err := r.Mgmt.Delete(ctx, &existing); client.IgnoreNotFound(err) != nil {
				return nil, err
			}
		}
		return nil, nil // its deletion event brings us back
	}
	if equality.Semantic.DeepEqual(existing.Spec, rt.Spec) && equality.Semantic.DeepEqual(existing.Labels, rt.Labels) {
		return &existing, nil
	}
	patch := client.MergeFrom(existing.DeepCopy())
	existing.Spec, existing.Labels = rt.Spec, rt.Labels
	if err := r.Mgmt.Patch(ctx, &existing, patch); apierrors.IsInvalid(err) {
		r.Recorder.Eventf(ing, nil, corev1.EventTypeWarning, "InvalidIngress", "SyncRoute", "the fleet refuses route %s: %v", rt.Name, err)
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	return &existing, nil
}

// deleteRoutes deletes the Ingress's Routes not in keep and reports whether
// any Route of the Ingress outside keep still exists.
func (r *Reconciler) deleteRoutes(ctx context.Context, ns, name string, keep map[string]bool) (remaining bool, err error) {
	var list v1.RouteList
	if err := r.Mgmt.List(ctx, &list, client.InNamespace(r.Namespace),
		client.MatchingLabels{LabelSourceKind: string(v1.SourceIngress), LabelSourceNamespace: ns}); err != nil {
		return false, err
	}
	for i := range list.Items {
		rt := &list.Items[i]
		if rt.Spec.Source.Kind != v1.SourceIngress || rt.Spec.Source.Namespace != ns || rt.Spec.Source.Name != name || keep[rt.Name] {
			continue
		}
		remaining = true
		if rt.DeletionTimestamp.IsZero() {
			if err := r.Mgmt.Delete(ctx, rt); client.IgnoreNotFound(err) != nil {
				return true, err
			}
			log.FromContext(ctx).V(1).Info("deleted Route", "route", rt.Name)
		}
		r.forget(rt.Name)
	}
	return remaining, nil
}

// cleanup removes the Routes, then the status and the finalizer.
func (r *Reconciler) cleanup(ctx context.Context, ing *networkingv1.Ingress) error {
	if !controllerutil.ContainsFinalizer(ing, Finalizer) {
		return nil
	}
	if remaining, err := r.deleteRoutes(ctx, ing.Namespace, ing.Name, nil); err != nil || remaining {
		return err // a Route's deletion event brings us back
	}
	if ing.DeletionTimestamp.IsZero() && len(ing.Status.LoadBalancer.Ingress) > 0 {
		patch := client.MergeFrom(ing.DeepCopy())
		ing.Status.LoadBalancer = networkingv1.IngressLoadBalancerStatus{}
		if err := r.Tenant.Status().Patch(ctx, ing, patch); client.IgnoreNotFound(err) != nil {
			return err
		}
	}
	if controllerutil.RemoveFinalizer(ing, Finalizer) {
		return client.IgnoreNotFound(r.Tenant.Update(ctx, ing))
	}
	return nil
}

// resolve finds the node port that serves an Ingress backend, making a
// companion NodePort Service for a ClusterIP one.
func (r *Reconciler) resolve(ctx context.Context, ing *networkingv1.Ingress, b *networkingv1.IngressBackend, companions map[string]*corev1.Service) (*v1.RouteBackend, error) {
	if b.Service == nil {
		return nil, fmt.Errorf("only Service backends are supported")
	}
	var svc corev1.Service
	switch err := r.Tenant.Get(ctx, types.NamespacedName{Namespace: ing.Namespace, Name: b.Service.Name}, &svc); {
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("Service %q not found", b.Service.Name)
	case err != nil:
		log.FromContext(ctx).Error(err, "reading a backend Service", "service", b.Service.Name)
		return nil, nil // transient; the Service's next event brings the Ingress back
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil, fmt.Errorf("Service %q is of type ExternalName, which the fleet cannot reach", svc.Name)
	}
	i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool {
		if b.Service.Port.Name != "" {
			return p.Name == b.Service.Port.Name
		}
		return p.Port == b.Service.Port.Number
	})
	if i < 0 {
		return nil, fmt.Errorf("Service %q has no port %s", svc.Name, portString(b.Service.Port))
	}
	port := svc.Spec.Ports[i]
	if port.Protocol != "" && port.Protocol != corev1.ProtocolTCP {
		return nil, fmt.Errorf("Service %q port %s is %s, not TCP", svc.Name, portString(b.Service.Port), port.Protocol)
	}
	// Weight and protocol as the API defaults them, so an unchanged Route compares equal.
	rb := &v1.RouteBackend{ServiceName: svc.Name, ServicePort: ptrPort(port.Port), Weight: ptr.To[int32](1), Protocol: protocolOf(port.AppProtocol)}
	if port.NodePort != 0 {
		rb.NodePort = v1.PortNumber(port.NodePort)
		return rb, nil
	}
	companion := companions[svc.Name]
	if companion == nil {
		var err error
		if companion, err = EnsureCompanion(ctx, r.Tenant, &svc); err != nil || companion == nil {
			return nil, err
		}
		companions[svc.Name] = companion
	}
	for _, p := range companion.Spec.Ports {
		if p.Port == port.Port && p.Protocol == port.Protocol && p.NodePort != 0 {
			rb.NodePort = v1.PortNumber(p.NodePort)
			return rb, nil
		}
	}
	return nil, nil // the companion controller is adding the port; its event brings us back
}

// EnsureCompanion returns the companion NodePort Service of svc, creating it
// when missing; nil, nil when it is not usable yet (an event follows).
func EnsureCompanion(ctx context.Context, tenant client.Client, svc *corev1.Service) (*corev1.Service, error) {
	var c corev1.Service
	switch err := tenant.Get(ctx, types.NamespacedName{Namespace: svc.Namespace, Name: CompanionName(svc.Name)}, &c); {
	case err == nil:
		if !isCompanionOf(&c, svc.Name) {
			return nil, fmt.Errorf("Service %q is ClusterIP and its node-port companion's name %q is taken by another Service", svc.Name, c.Name)
		}
		if !c.DeletionTimestamp.IsZero() {
			return nil, nil // being replaced; its deletion event brings us back
		}
		return &c, nil
	case !apierrors.IsNotFound(err):
		log.FromContext(ctx).Error(err, "reading a companion Service", "service", svc.Name)
		return nil, nil
	}
	want := desiredCompanion(svc)
	switch err := tenant.Create(ctx, want); {
	case apierrors.IsAlreadyExists(err):
		return nil, nil // our cache lags; its create event brings us back
	case err != nil:
		return nil, fmt.Errorf("creating the node-port companion of Service %q: %v", svc.Name, err)
	}
	log.FromContext(ctx).V(1).Info("created companion Service", "companion", want.Name)
	return want, nil
}

func portString(p networkingv1.ServiceBackendPort) string {
	if p.Name != "" {
		return fmt.Sprintf("%q", p.Name)
	}
	return fmt.Sprint(p.Number)
}

func ptrPort(p int32) *v1.PortNumber { n := v1.PortNumber(p); return &n }

// protocolOf maps a Service port's appProtocol onto what the fleet speaks to it.
func protocolOf(app *string) v1.BackendProtocol {
	if app == nil {
		return v1.BackendHTTP
	}
	switch strings.ToLower(*app) {
	case "kubernetes.io/h2c", "h2c", "http2":
		return v1.BackendHTTP2
	case "grpc", "kubernetes.io/grpc":
		return v1.BackendGRPC
	}
	return v1.BackendHTTP
}

// copyStatus writes the fleet's addresses onto the Ingress and turns refusals
// into events the tenant sees, once per change of reason.
func (r *Reconciler) copyStatus(ctx context.Context, ing *networkingv1.Ingress, routes []*v1.Route) error {
	var ips []string
	var ports []networkingv1.IngressPortStatus
	for _, rt := range routes {
		for _, a := range rt.Status.Addresses {
			if !slices.Contains(ips, string(a.IP)) {
				ips = append(ips, string(a.IP))
			}
		}
		ports = addPorts(ports, rt.Status.Ports)
		r.reportConditions(ing, rt)
	}
	slices.Sort(ips)
	want := networkingv1.IngressLoadBalancerStatus{}
	for _, ip := range ips {
		// networking/v1 has no ipMode: the address is a proxy either way.
		want.Ingress = append(want.Ingress, networkingv1.IngressLoadBalancerIngress{IP: ip, Ports: slices.Clone(ports)})
	}
	if equality.Semantic.DeepEqual(ing.Status.LoadBalancer, want) {
		return nil
	}
	patch := client.MergeFrom(ing.DeepCopy())
	ing.Status.LoadBalancer = want
	if err := r.Tenant.Status().Patch(ctx, ing, patch); err != nil {
		return err
	}
	if len(ips) > 0 {
		r.Recorder.Eventf(ing, nil, corev1.EventTypeNormal, "Synced", "SyncRoute", "served by the fleet on %s", strings.Join(ips, ", "))
	}
	return nil
}

// addPorts adds the ports the fleet serves a Route on (its shared HTTP and
// HTTPS listeners, which need not be 80 and 443) to an Ingress's, each once,
// in port order.
func addPorts(to []networkingv1.IngressPortStatus, ports []v1.RoutePort) []networkingv1.IngressPortStatus {
	for _, p := range ports {
		ps := networkingv1.IngressPortStatus{Port: int32(p.Port), Protocol: corev1.ProtocolTCP}
		if !slices.Contains(to, ps) {
			to = append(to, ps)
		}
	}
	slices.SortFunc(to, func(a, b networkingv1.IngressPortStatus) int { return int(a.Port - b.Port) })
	return to
}

// reportConditions emits a Warning for each problem condition of the Route
// whose reason differs from the one told last.
func (r *Reconciler) reportConditions(ing *networkingv1.Ingress, rt *v1.Route) {
	for _, t := range []string{v1.ConditionAccepted, v1.ConditionResolvedRefs} {
		key := rt.Name + "/" + t
		c := meta.FindStatusCondition(rt.Status.Conditions, t)
		if c == nil || c.ObservedGeneration != rt.Generation {
			continue // not yet judged for this spec
		}
		if c.Status == metav1.ConditionTrue && (c.Reason == v1.ReasonAccepted || c.Reason == v1.ReasonResolvedRefs) {
			r.reported.Delete(key)
			continue
		}
		// Once per change of reason or message (a new limit, another hostname).
		told := c.Reason + "\n" + c.Message
		if last, ok := r.reported.Swap(key, told); ok && last == told {
			continue
		}
		r.Recorder.Eventf(ing, nil, corev1.EventTypeWarning, c.Reason, "SyncRoute", "route %s: %s", rt.Name, c.Message)
	}
}

func (r *Reconciler) forget(route string) {
	for _, t := range []string{v1.ConditionAccepted, v1.ConditionResolvedRefs} {
		r.reported.Delete(route + "/" + t)
	}
}
