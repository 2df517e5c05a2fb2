package serving

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// Reconciler writes the Serving condition of the LoadBalancers and Routes
// of global names from Loads. It writes only the object it reconciles, and
// reads only the load of backends its own tenant takes part in: a
// LoadBalancer's through its own tenant's group key and admitted address, a
// Route's through the hostnames admission accepted for it. So no tenant's
// status can be moved by another group's traffic or objects. It runs on the
// leader and sees the reports of the proxies connected to it.
type Reconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
	Loads    *Loads
	Log      logr.Logger
	// Registerer for fleetlb_global_serving; nil registers nothing.
	Registerer prometheus.Registerer

	gauge   *prometheus.GaugeVec
	lbs     chan event.GenericEvent
	routes  chan event.GenericEvent
	mu      sync.Mutex
	pending map[string]bool // backends whose serving clusters changed
	kick    chan struct{}
	labels  map[types.NamespacedName][][]string // object → gauge label sets it set
}

// SetupWithManager registers the two controllers and the fan-out from
// Loads.OnChange to the objects of each changed backend.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.lbs, r.routes = make(chan event.GenericEvent, 1024), make(chan event.GenericEvent, 1024)
	r.pending, r.kick = map[string]bool{}, make(chan struct{}, 1)
	r.labels = map[types.NamespacedName][][]string{}
	r.gauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "fleetlb_global_serving",
		Help: "1 when the tenant's cluster takes traffic of the global name (L4) or shared hostname (L7), 0 when other clusters of its group do, as the proxies' load reports say.",
	}, []string{"fleet", "global", "tenant"})
	if r.Registerer != nil {
		if err := r.Registerer.Register(r.gauge); err != nil {
			return err
		}
	}
	r.Loads.OnChange = r.changed
	if err := mgr.Add(manager.RunnableFunc(r.fanOut)); err != nil {
		return err
	}
	if err := ctrl.NewControllerManagedBy(mgr).Named("serving-loadbalancer").
		For(&v1.LoadBalancer{}, builder.WithPredicates(servingInputsChanged)).
		WatchesRawSource(source.Channel(r.lbs, &handler.EnqueueRequestForObject{})).
		Complete(reconcile.Func(r.reconcileLoadBalancer)); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).Named("serving-route").
		For(&v1.Route{}, builder.WithPredicates(servingInputsChanged)).
		WatchesRawSource(source.Channel(r.routes, &handler.EnqueueRequestForObject{})).
		Complete(reconcile.Func(r.reconcileRoute))
}

// changed is Loads.OnChange: it never blocks the report stream.
func (r *Reconciler) changed(backends []string) {
	r.mu.Lock()
	for _, b := range backends {
		r.pending[b] = true
	}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// fanOut turns changed backends into events for the objects of their
// global name or hostname.
func (r *Reconciler) fanOut(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.kick:
		}
		r.mu.Lock()
		names := slices.Sorted(maps.Keys(r.pending))
		clear(r.pending)
		r.mu.Unlock()
		for _, name := range names {
			r.enqueueObjectsOf(ctx, name)
		}
	}
}

func (r *Reconciler) enqueueObjectsOf(ctx context.Context, backend string) {
	if global, ok := l4Global(backend); ok {
		var lbs v1.LoadBalancerList
		if err := r.Client.List(ctx, &lbs); err != nil {
			r.Log.Error(err, "listing LoadBalancers")
			return
		}
		for i := range lbs.Items {
			if g := lbs.Items[i].Spec.Global; g != nil && g.Name == global {
				r.send(ctx, r.lbs, &lbs.Items[i])
			}
		}
		return
	}
	host, ok := l7Host(backend)
	if !ok {
		return
	}
	var rts v1.RouteList
	if err := r.Client.List(ctx, &rts); err != nil {
		r.Log.Error(err, "listing Routes")
		return
	}
	for i := range rts.Items {
		if slices.Contains(rts.Items[i].Spec.Hostnames, v1.Hostname(host)) {
			r.send(ctx, r.routes, &rts.Items[i])
		}
	}
}

func (r *Reconciler) send(ctx context.Context, ch chan event.GenericEvent, o client.Object) {
	select {
	case ch <- event.GenericEvent{Object: o}:
	case <-ctx.Done():
	}
}

// l4Global is the global name of a "global/<group key>/<name>/<vip>/<proto>/<port>" backend.
func l4Global(backend string) (string, bool) {
	parts := strings.Split(backend, "/")
	if len(parts) != 6 || parts[0] != "global" || !(strings.HasPrefix(parts[1], "group:") || strings.HasPrefix(parts[1], "tenant:")) {
		return "", false
	}
	return parts[2], true
}

// l7Host is the hostname of a "global/<hostname>/<route>" backend.
func l7Host(backend string) (string, bool) {
	rest, ok := strings.CutPrefix(backend, GlobalPrefix)
	if !ok {
		return "", false
	}
	host, _, ok := strings.Cut(rest, "/")
	if !ok || strings.Contains(host, ":") {
		return "", false
	}
	return host, true
}

// member is one object of a global name, for the reason of a Serving=False.
type member struct {
	cluster  string
	priority int32
}

func (r *Reconciler) reconcileLoadBalancer(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var lb v1.LoadBalancer
	if err := r.Client.Get(ctx, req.NamespacedName, &lb); err != nil {
		if apierrors.IsNotFound(err) {
			r.setGauge(req.NamespacedName, nil)
		}
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	g := lb.Spec.Global
	t, own, err := r.tenantAndCluster(ctx, lb.Namespace, lb.Spec.Source.Cluster)
	if err != nil {
		return reconcile.Result{}, err
	}
	if g == nil || g.Name == "" || len(lb.Status.Addresses) == 0 || t == nil || !lb.DeletionTimestamp.IsZero() {
		r.setGauge(req.NamespacedName, nil)
		return reconcile.Result{}, r.write(ctx, &lb, &lb.Status.Conditions, nil)
	}
	groupKey := tenant.GroupKey(t)
	share, found := r.Loads.Share(fmt.Sprintf("%s%s/%s/%s/", GlobalPrefix, groupKey, g.Name, lb.Status.Addresses[0].IP))
	if !found {
		return reconcile.Result{}, r.write(ctx, &lb, &lb.Status.Conditions, nil)
	}
	members := func() ([]member, error) {
		var lbs v1.LoadBalancerList
		if err := r.Client.List(ctx, &lbs); err != nil {
			return nil, err
		}
		var out []member
		for _, o := range lbs.Items {
			if o.Spec.Global == nil || o.Spec.Global.Name != g.Name {
				continue
			}
			ot, cluster, err := r.tenantAndCluster(ctx, o.Namespace, o.Spec.Source.Cluster)
			if err != nil {
				return nil, err
			}
			if ot != nil && tenant.GroupKey(ot) == groupKey {
				out = append(out, member{cluster: cluster, priority: priorityOf(o.Spec.Global)})
			}
		}
		return out, nil
	}
	cond, err := condition(g, own, "global name "+g.Name, share, members, lb.Generation)
	if err != nil {
		return reconcile.Result{}, err
	}
	r.setGauge(req.NamespacedName, [][]string{{share.Fleet, g.Name, t.Name, servingValue(cond)}})
	return reconcile.Result{}, r.write(ctx, &lb, &lb.Status.Conditions, cond)
}

func (r *Reconciler) reconcileRoute(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var rt v1.Route
	if err := r.Client.Get(ctx, req.NamespacedName, &rt); err != nil {
		if apierrors.IsNotFound(err) {
			r.setGauge(req.NamespacedName, nil)
		}
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	t, own, err := r.tenantAndCluster(ctx, rt.Namespace, rt.Spec.Source.Cluster)
	if err != nil {
		return reconcile.Result{}, err
	}
	hosts := acceptedHostnames(&rt)
	if t == nil || len(hosts) == 0 {
		r.setGauge(req.NamespacedName, nil)
		return reconcile.Result{}, r.write(ctx, &rt, &rt.Status.Conditions, nil)
	}
	total := Share{ByCluster: map[string]uint64{}}
	var served []string
	var labels [][]string
	for _, h := range hosts {
		s, found := r.Loads.Share(GlobalPrefix + h + "/")
		if !found {
			continue
		}
		served = append(served, h)
		total.Fleet, total.Proxies = s.Fleet, max(total.Proxies, s.Proxies)
		for c, v := range s.ByCluster {
			total.ByCluster[c] += v
		}
		labels = append(labels, []string{s.Fleet, h, t.Name, boolValue(s.ByCluster[own] > 0)})
	}
	if len(served) == 0 {
		r.setGauge(req.NamespacedName, nil)
		return reconcile.Result{}, r.write(ctx, &rt, &rt.Status.Conditions, nil)
	}
	groupKey := tenant.GroupKey(t)
	members := func() ([]member, error) {
		var rts v1.RouteList
		if err := r.Client.List(ctx, &rts); err != nil {
			return nil, err
		}
		var out []member
		for i := range rts.Items {
			o := &rts.Items[i]
			if !slices.ContainsFunc(acceptedHostnames(o), func(h string) bool { return slices.Contains(served, h) }) {
				continue
			}
			ot, cluster, err := r.tenantAndCluster(ctx, o.Namespace, o.Spec.Source.Cluster)
			if err != nil {
				return nil, err
			}
			if ot != nil && tenant.GroupKey(ot) == groupKey {
				out = append(out, member{cluster: cluster, priority: priorityOf(o.Spec.Global)})
			}
		}
		return out, nil
	}
	what := "hostname " + served[0]
	if len(served) > 1 {
		what = "hostnames " + strings.Join(served, ", ")
	}
	cond, err := condition(rt.Spec.Global, own, what, total, members, rt.Generation)
	if err != nil {
		return reconcile.Result{}, err
	}
	r.setGauge(req.NamespacedName, labels)
	return reconcile.Result{}, r.write(ctx, &rt, &rt.Status.Conditions, cond)
}

// acceptedHostnames are the hostnames admission accepted for the Route and
// its spec still lists (as the snapshot builder serves them).
func acceptedHostnames(rt *v1.Route) []string {
	if !rt.DeletionTimestamp.IsZero() || !meta.IsStatusConditionTrue(rt.Status.Conditions, v1.ConditionAccepted) {
		return nil
	}
	var out []string
	for _, h := range rt.Status.AcceptedHostnames {
		if slices.Contains(rt.Spec.Hostnames, h) && !slices.Contains(out, string(h)) {
			out = append(out, string(h))
		}
	}
	return out
}

// tenantAndCluster is the Tenant of a tenant namespace (nil if none) and
// the name its endpoints carry as locality region, as the snapshot builder
// names it: the TenantNodes' cluster, else the object's source cluster.
func (r *Reconciler) tenantAndCluster(ctx context.Context, ns, source string) (*v1.Tenant, string, error) {
	name, ok := strings.CutPrefix(ns, tenant.NamespacePrefix)
	if !ok {
		return nil, "", nil
	}
	// Read without a copy (its hostname-claim records): only read.
	t, err := tenant.Lookup(ctx, r.Client, name)
	if err != nil || t == nil {
		return nil, "", err
	}
	var nodes v1.TenantNodes
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: v1.TenantNodesName}, &nodes); err != nil && !apierrors.IsNotFound(err) {
		return nil, "", err
	}
	return t, cmp.Or(nodes.Spec.Cluster, source), nil
}

func priorityOf(g *v1.GlobalOptions) int32 {
	if g == nil || g.Priority == nil {
		return 0
	}
	return *g.Priority
}

// condition is the Serving condition of an object whose cluster is own.
// Messages name the global name and this cluster only, never another tenant.
func condition(g *v1.GlobalOptions, own, what string, share Share, members func() ([]member, error), gen int64) (*metav1.Condition, error) {
	serving := share.Serving()
	if serving[own] {
		return &metav1.Condition{Type: v1.ConditionServing, Status: metav1.ConditionTrue, Reason: v1.ReasonServing, ObservedGeneration: gen,
			Message: fmt.Sprintf("cluster %s takes traffic of %s", own, what)}, nil
	}
	c := &metav1.Condition{Type: v1.ConditionServing, Status: metav1.ConditionFalse, Reason: v1.ReasonNotServing, ObservedGeneration: gen,
		Message: fmt.Sprintf("the traffic of %s goes to other clusters of the group, none to cluster %s", what, own)}
	if g == nil || g.Strategy != v1.StrategyFailover {
		return c, nil
	}
	ms, err := members()
	if err != nil {
		return nil, err
	}
	mine := priorityOf(g)
	failedOver := false
	for _, m := range ms {
		if serving[m.cluster] && m.priority > mine {
			failedOver = true
		}
	}
	if failedOver {
		c.Reason = v1.ReasonFailedOver
		c.Message = fmt.Sprintf("%s failed over: its traffic goes to a cluster of a later priority, none to cluster %s (priority %d), whose backends fail health checks or connects", what, own, mine)
	} else {
		c.Reason = v1.ReasonStandby
		c.Message = fmt.Sprintf("cluster %s (priority %d) is a standby for %s: it takes traffic when the clusters before it fail", own, mine, what)
	}
	return c, nil
}

// write sets (nil: removes) the Serving condition, only on change, with an
// event when its status or reason changed.
func (r *Reconciler) write(ctx context.Context, obj client.Object, conds *[]metav1.Condition, c *metav1.Condition) error {
	var old *metav1.Condition
	if o := meta.FindStatusCondition(*conds, v1.ConditionServing); o != nil {
		old = o.DeepCopy() // SetStatusCondition below changes the element in place
	}
	if c == nil && old == nil {
		return nil
	}
	if c != nil && old != nil && old.Status == c.Status && old.Reason == c.Reason && old.Message == c.Message && old.ObservedGeneration == c.ObservedGeneration {
		return nil
	}
	patch := client.MergeFromWithOptions(obj.DeepCopyObject().(client.Object), client.MergeFromWithOptimisticLock{})
	if c == nil {
		meta.RemoveStatusCondition(conds, v1.ConditionServing)
	} else {
		meta.SetStatusCondition(conds, *c)
	}
	if err := r.Client.Status().Patch(ctx, obj, patch); err != nil {
		return client.IgnoreNotFound(err)
	}
	if c != nil && (old == nil || old.Status != c.Status || old.Reason != c.Reason) && r.Recorder != nil {
		kind := corev1.EventTypeNormal
		if c.Reason == v1.ReasonFailedOver {
			kind = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(obj, nil, kind, c.Reason, "Serve", "%s", c.Message)
	}
	return nil
}

func servingValue(c *metav1.Condition) string { return boolValue(c.Status == metav1.ConditionTrue) }

func boolValue(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// setGauge replaces the gauge series an object set; each label set is
// fleet, global, tenant and the value "1" or "0".
func (r *Reconciler) setGauge(obj types.NamespacedName, sets [][]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, old := range r.labels[obj] {
		r.gauge.DeleteLabelValues(old[:3]...)
	}
	delete(r.labels, obj)
	for _, s := range sets {
		v := 0.0
		if s[3] == "1" {
			v = 1
		}
		r.gauge.WithLabelValues(s[:3]...).Set(v)
	}
	if len(sets) > 0 {
		r.labels[obj] = sets
	}
}

// servingInputsChanged passes the updates that change what the Serving
// condition is made from (spec, deletion, the admitted address or hostnames),
// not the status writes of admission, the snapshot or this controller: at
// scale those would wake it several times per object. Load reports come
// through the channel sources, which no predicate filters.
var servingInputsChanged = predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
	if e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration() ||
		!e.ObjectOld.GetDeletionTimestamp().Equal(e.ObjectNew.GetDeletionTimestamp()) {
		return true
	}
	switch o := e.ObjectOld.(type) {
	case *v1.LoadBalancer:
		n, ok := e.ObjectNew.(*v1.LoadBalancer)
		return !ok || !slices.Equal(o.Status.Addresses, n.Status.Addresses)
	case *v1.Route:
		n, ok := e.ObjectNew.(*v1.Route)
		return !ok || !slices.Equal(acceptedHostnames(o), acceptedHostnames(n))
	}
	return true
}}
