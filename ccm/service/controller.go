// Package service is the ccm's Service controller: it turns tenant Services of
// type LoadBalancer into LoadBalancer objects in the tenant's management
// namespace and copies their addresses back, following the cloud-provider
// service-controller contract (cleanup finalizer before anything else, status
// patched only when it changed, ipMode Proxy).
package service

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	servicehelper "k8s.io/cloud-provider/service/helpers"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// DefaultClass is the loadBalancerClass the ccm serves by default.
const DefaultClass = "fleetlb.io/lb"

// Labels on management LoadBalancers that point back at the tenant Service.
const (
	labelSourceNamespace = "fleetlb.io/source-namespace"
	labelSourceName      = "fleetlb.io/source-name"
)

// Reconciler syncs one tenant cluster's LoadBalancer Services.
type Reconciler struct {
	// Tenant is the tenant cluster (the ccm's own).
	Tenant client.Client
	// Mgmt reaches the tenant's namespace in the management cluster.
	Mgmt client.Client
	// Namespace is the tenant's namespace in the management cluster.
	Namespace string
	// ClusterName is the tenant cluster's name, recorded as the source.
	ClusterName string
	// Class is the loadBalancerClass served; DefaultClass when empty.
	Class string
	// ServeUnclassed also serves Services with no loadBalancerClass (the cluster's default LB).
	ServeUnclassed bool
	Recorder       recorder.EventRecorder
	// Workers is how many Services are reconciled at once (DefaultWorkers
	// when 0): each reconcile waits on management round trips, so one worker
	// would serialise a burst of Services behind them.
	Workers int

	// refusals remembers the refusal last told per Service, so each one is
	// an event once, not on every reconcile.
	refusals sync.Map // "<namespace>/<name>" → reason and message
}

// DefaultWorkers is Reconciler.Workers when unset: a burst of Services (a
// namespace applied, a restart) waits on round trips, not on CPU.
const DefaultWorkers = 16

// LoadBalancerName is the management object's name for a tenant Service.
// Service names and namespaces are DNS labels (no dots), so the dot keeps it unique.
func LoadBalancerName(namespace, name string) string { return namespace + "." + name }

// SetupWithManager registers the controller; mgmt is the management cluster,
// whose LoadBalancer status changes are copied back as soon as they happen.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager, mgmt cluster.Cluster) error {
	if r.Class == "" {
		r.Class = DefaultClass
	}
	toService := handler.TypedEnqueueRequestsFromMapFunc(func(_ context.Context, lb *v1.LoadBalancer) []reconcile.Request {
		ns, name := lb.Labels[labelSourceNamespace], lb.Labels[labelSourceName]
		if ns == "" || name == "" {
			return nil
		}
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}}}
	})
	return ctrl.NewControllerManagedBy(mgr).
		For(&corev1.Service{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			svc := o.(*corev1.Service)
			// Ours, or once ours: a Service that changed type still needs cleanup.
			return r.wants(svc) || servicehelper.HasLBFinalizer(svc)
		}), serviceChanged)).
		WatchesRawSource(source.Kind(mgmt.GetCache(), &v1.LoadBalancer{}, toService, loadBalancerChanged)).
		WithOptions(controller.Options{MaxConcurrentReconciles: cmp.Or(r.Workers, DefaultWorkers)}).
		Named("service").
		Complete(r)
}

// serviceChanged passes the Service updates the controller acts on: its
// spec (Services keep generation 1), annotations, deletion, or our finalizer
// taken away. Our own writes — the finalizer added, the status — are no news
// (the reconcile that wrote them carries on).
var serviceChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld, e.ObjectNew
		os, ok1 := o.(*corev1.Service)
		ns, ok2 := n.(*corev1.Service)
		return !ok1 || !ok2 || !equality.Semantic.DeepEqual(os.Spec, ns.Spec) || !maps.Equal(o.GetAnnotations(), n.GetAnnotations()) ||
			o.GetDeletionTimestamp().IsZero() != n.GetDeletionTimestamp().IsZero() ||
			controllerutil.ContainsFinalizer(o, servicehelper.LoadBalancerCleanupFinalizer) && !controllerutil.ContainsFinalizer(n, servicehelper.LoadBalancerCleanupFinalizer)
	},
}

// loadBalancerChanged passes the management LoadBalancer updates copied back
// to the Service (addresses, the Accepted condition) or acted on (spec,
// labels, deletion); Programmed and Serving, written for every object in
// bulk, are not among them.
var loadBalancerChanged = predicate.TypedFuncs[*v1.LoadBalancer]{
	UpdateFunc: func(e event.TypedUpdateEvent[*v1.LoadBalancer]) bool {
		o, n := e.ObjectOld, e.ObjectNew
		return o.Generation != n.Generation || !maps.Equal(o.Labels, n.Labels) ||
			o.DeletionTimestamp.IsZero() != n.DeletionTimestamp.IsZero() ||
			!equality.Semantic.DeepEqual(o.Status.Addresses, n.Status.Addresses) ||
			!equality.Semantic.DeepEqual(meta.FindStatusCondition(o.Status.Conditions, v1.ConditionAccepted), meta.FindStatusCondition(n.Status.Conditions, v1.ConditionAccepted))
	},
}

// wants reports whether the Service should have a load balancer from us.
func (r *Reconciler) wants(svc *corev1.Service) bool {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return false
	}
	if svc.Spec.LoadBalancerClass == nil {
		return r.ServeUnclassed
	}
	return *svc.Spec.LoadBalancerClass == r.Class
}

// Reconcile implements reconcile.Reconciler.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var svc corev1.Service
	if err := r.Tenant.Get(ctx, req.NamespacedName, &svc); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !svc.DeletionTimestamp.IsZero() || !r.wants(&svc) {
		return ctrl.Result{}, r.cleanup(ctx, &svc)
	}
	// The finalizer goes on before anything exists outside the cluster.
	if controllerutil.AddFinalizer(&svc, servicehelper.LoadBalancerCleanupFinalizer) {
		if err := r.Tenant.Update(ctx, &svc); err != nil {
			return ctrl.Result{}, err
		}
	}

	spec, err := r.desiredSpec(&svc)
	if err != nil {
		// Bad input waits for the user to change the Service; retrying cannot help.
		r.Recorder.Eventf(&svc, nil, corev1.EventTypeWarning, ReasonInvalidService, "SyncLoadBalancer", "%v", err)
		return ctrl.Result{}, r.writeStatus(ctx, &svc, svc.Status.LoadBalancer, &metav1.Condition{
			Type: ConditionAccepted, Status: metav1.ConditionFalse, Reason: ReasonInvalidService, Message: err.Error(), ObservedGeneration: svc.Generation})
	}

	lb := &v1.LoadBalancer{ObjectMeta: metaFor(r.Namespace, &svc)}
	var existing v1.LoadBalancer
	switch err := r.Mgmt.Get(ctx, client.ObjectKeyFromObject(lb), &existing); {
	case apierrors.IsNotFound(err):
		lb.Spec = *spec
		// With the manager's finalizer already on: admission then writes only status.
		lb.Finalizers = []string{v1.FinalizerAddressRelease}
		if err := r.Mgmt.Create(ctx, lb); apierrors.IsAlreadyExists(err) {
			return ctrl.Result{}, nil // our cache lags; its create event brings this Service back
		} else if err != nil {
			r.Recorder.Eventf(&svc, nil, corev1.EventTypeWarning, "SyncLoadBalancerFailed", "SyncLoadBalancer", "creating the load balancer: %v", err)
			return ctrl.Result{}, err
		}
		r.Recorder.Eventf(&svc, nil, corev1.EventTypeNormal, "EnsuringLoadBalancer", "SyncLoadBalancer", "requested a load balancer from the fleet")
		return ctrl.Result{}, nil
	case err != nil:
		return ctrl.Result{}, err
	case existing.Spec.Source.UID != string(svc.UID):
		// Left over from an earlier Service of the same name: replace it.
		if err := r.Mgmt.Delete(ctx, &existing); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, nil // its deletion event brings us back
	}
	if !equality.Semantic.DeepEqual(existing.Spec, *spec) || !equality.Semantic.DeepEqual(existing.Labels, lb.Labels) {
		patch := client.MergeFrom(existing.DeepCopy())
		existing.Spec, existing.Labels = *spec, lb.Labels
		if err := r.Mgmt.Patch(ctx, &existing, patch); err != nil {
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{}, r.copyStatus(ctx, &svc, &existing)
}

func metaFor(ns string, svc *corev1.Service) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Namespace: ns,
		Name:      LoadBalancerName(svc.Namespace, svc.Name),
		Labels:    map[string]string{labelSourceNamespace: svc.Namespace, labelSourceName: svc.Name},
	}
}

// copyStatus writes the management object's addresses onto the Service, and
// turns a refusal into an event the tenant sees.
func (r *Reconciler) copyStatus(ctx context.Context, svc *corev1.Service, lb *v1.LoadBalancer) error {
	key := svc.Namespace + "/" + svc.Name
	if c := meta.FindStatusCondition(lb.Status.Conditions, v1.ConditionAccepted); c != nil && c.ObservedGeneration == lb.Generation {
		if c.Status == metav1.ConditionFalse {
			told := c.Reason + "\n" + c.Message
			if last, ok := r.refusals.Swap(key, told); !ok || last != told {
				r.Recorder.Eventf(svc, nil, corev1.EventTypeWarning, c.Reason, "SyncLoadBalancer", "%s", c.Message)
			}
		} else {
			r.refusals.Delete(key)
		}
	}
	want := corev1.LoadBalancerStatus{}
	for _, a := range lb.Status.Addresses {
		want.Ingress = append(want.Ingress, corev1.LoadBalancerIngress{IP: string(a.IP), IPMode: ptr.To(corev1.LoadBalancerIPModeProxy)})
	}
	newAddress := !servicehelper.LoadBalancerStatusEqual(&svc.Status.LoadBalancer, &want)
	if err := r.writeStatus(ctx, svc, want, acceptedCondition(svc, lb)); err != nil {
		return err
	}
	if newAddress && len(want.Ingress) > 0 {
		r.Recorder.Eventf(svc, nil, corev1.EventTypeNormal, "EnsuredLoadBalancer", "SyncLoadBalancer", "load balancer address %s", want.Ingress[0].IP)
	}
	return nil
}

// writeStatus patches the Service's load-balancer status and its
// ConditionAccepted (cond nil: left as it is), only when either changed.
func (r *Reconciler) writeStatus(ctx context.Context, svc *corev1.Service, lbStatus corev1.LoadBalancerStatus, cond *metav1.Condition) error {
	conds := withCondition(svc.Status.Conditions, cond)
	if servicehelper.LoadBalancerStatusEqual(&svc.Status.LoadBalancer, &lbStatus) && equality.Semantic.DeepEqual(conds, svc.Status.Conditions) {
		return nil
	}
	patch := client.MergeFrom(svc.DeepCopy())
	svc.Status.LoadBalancer, svc.Status.Conditions = lbStatus, conds
	return r.Tenant.Status().Patch(ctx, svc, patch)
}

// cleanup removes the management object, then the status and the finalizer.
func (r *Reconciler) cleanup(ctx context.Context, svc *corev1.Service) error {
	r.refusals.Delete(svc.Namespace + "/" + svc.Name)
	if !servicehelper.HasLBFinalizer(svc) {
		return nil
	}
	lb := &v1.LoadBalancer{ObjectMeta: metaFor(r.Namespace, svc)}
	switch err := r.Mgmt.Get(ctx, client.ObjectKeyFromObject(lb), lb); {
	case err == nil:
		if lb.DeletionTimestamp.IsZero() {
			if err := r.Mgmt.Delete(ctx, lb); client.IgnoreNotFound(err) != nil {
				return err
			}
			r.Recorder.Eventf(svc, nil, corev1.EventTypeNormal, "DeletingLoadBalancer", "DeleteLoadBalancer", "releasing the load balancer")
		}
		return nil // the management object's deletion event brings us back
	case !apierrors.IsNotFound(err):
		return err
	}
	if len(svc.Status.LoadBalancer.Ingress) > 0 || meta.FindStatusCondition(svc.Status.Conditions, ConditionAccepted) != nil {
		patch := client.MergeFrom(svc.DeepCopy())
		svc.Status.LoadBalancer = corev1.LoadBalancerStatus{}
		meta.RemoveStatusCondition(&svc.Status.Conditions, ConditionAccepted)
		if err := r.Tenant.Status().Patch(ctx, svc, patch); client.IgnoreNotFound(err) != nil {
			return err
		}
	}
	if controllerutil.RemoveFinalizer(svc, servicehelper.LoadBalancerCleanupFinalizer) {
		return client.IgnoreNotFound(r.Tenant.Update(ctx, svc))
	}
	return nil
}

// desiredSpec maps a Service onto a LoadBalancer spec.
func (r *Reconciler) desiredSpec(svc *corev1.Service) (*v1.LoadBalancerSpec, error) {
	spec := &v1.LoadBalancerSpec{
		Source:          v1.ServiceSource{Kind: v1.SourceService, Cluster: r.ClusterName, Namespace: svc.Namespace, Name: svc.Name, UID: string(svc.UID)},
		SessionAffinity: v1.SessionAffinityNone,
	}
	for _, p := range svc.Spec.Ports {
		if p.NodePort == 0 {
			return nil, fmt.Errorf("port %d has no nodePort (allocateLoadBalancerNodePorts is false?); the fleet reaches Services through node ports", p.Port)
		}
		proto := v1.Protocol(p.Protocol)
		if proto == "" {
			proto = v1.ProtocolTCP
		}
		if proto != v1.ProtocolTCP && proto != v1.ProtocolUDP {
			return nil, fmt.Errorf("port %d: protocol %s is not supported (TCP and UDP are)", p.Port, p.Protocol)
		}
		spec.Ports = append(spec.Ports, v1.LoadBalancerPort{Name: p.Name, Port: v1.PortNumber(p.Port), Protocol: proto, NodePort: v1.PortNumber(p.NodePort)})
	}
	if len(spec.Ports) == 0 {
		return nil, fmt.Errorf("the Service has no ports")
	}
	if ip := svc.Annotations[v1.AnnotationLoadBalancerIP]; ip != "" {
		spec.LoadBalancerIP = v1.IPAddress(ip)
	} else if svc.Spec.LoadBalancerIP != "" {
		spec.LoadBalancerIP = v1.IPAddress(svc.Spec.LoadBalancerIP)
	}
	ranges, err := servicehelper.GetLoadBalancerSourceRanges(svc)
	if err != nil {
		return nil, fmt.Errorf("loadBalancerSourceRanges: %v", err)
	}
	if !servicehelper.IsAllowAll(ranges) {
		for _, s := range ranges.StringSlice() {
			spec.SourceRanges = append(spec.SourceRanges, v1.CIDR(s))
		}
		slices.Sort(spec.SourceRanges)
	}
	if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		spec.SessionAffinity = v1.SessionAffinityClientIP
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			spec.SessionAffinityTimeoutSeconds = ptr.To(*c.ClientIP.TimeoutSeconds)
		}
	}
	if servicehelper.NeedsHealthCheck(svc) {
		// externalTrafficPolicy Local: kube-proxy answers on the health-check
		// node port only on nodes with a ready endpoint.
		path, port := servicehelper.GetServiceHealthCheckPathPort(svc)
		if port != 0 {
			spec.HealthCheck = &v1.HealthCheck{Type: v1.HealthCheckHTTP, Path: path, NodePort: ptr.To(v1.PortNumber(port))}
		}
	}
	switch pp := svc.Annotations[v1.AnnotationProxyProtocol]; pp {
	case "":
	case "v1", "v2":
		spec.ProxyProtocol = v1.ProxyProtocol(pp)
	default:
		return nil, fmt.Errorf("annotation %s: %q is not v1 or v2", v1.AnnotationProxyProtocol, pp)
	}
	if g, err := globalOptions(svc.Annotations); err != nil {
		return nil, err
	} else {
		spec.Global = g
	}
	return spec, nil
}

func globalOptions(ann map[string]string) (*v1.GlobalOptions, error) {
	name, strategy := ann[v1.AnnotationGlobalName], ann[v1.AnnotationStrategy]
	weight, priority := ann[v1.AnnotationWeight], ann[v1.AnnotationPriority]
	if name == "" && strategy == "" && weight == "" && priority == "" {
		return nil, nil
	}
	g := &v1.GlobalOptions{Name: name, Strategy: v1.StrategyRoundRobin}
	switch s := v1.Strategy(strategy); s {
	case "":
	case v1.StrategyRoundRobin, v1.StrategyWeighted, v1.StrategyFailover:
		g.Strategy = s
	default:
		return nil, fmt.Errorf("annotation %s: %q is not roundRobin, weighted or failover", v1.AnnotationStrategy, strategy)
	}
	for _, kv := range []struct {
		key, val string
		dst      **int32
		max      int
	}{{v1.AnnotationWeight, weight, &g.Weight, 1000}, {v1.AnnotationPriority, priority, &g.Priority, 127}} {
		if kv.val == "" {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(kv.val))
		if err != nil || n < 0 || n > kv.max {
			return nil, fmt.Errorf("annotation %s: %q is not a number from 0 to %d", kv.key, kv.val, kv.max)
		}
		*kv.dst = ptr.To(int32(n))
	}
	return g, nil
}
