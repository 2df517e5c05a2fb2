package admission

import (
	"context"
	"net/netip"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// IndexRefused indexes LoadBalancers refused admission by the reason of
// their Accepted=False condition, and by refusedAny: the retries look up
// only those that wait for something, never the whole cluster.
const IndexRefused = "fleetlb.io/loadbalancer-refused"

// refusedAny is the IndexRefused value every refused LoadBalancer has.
const refusedAny = "*"

func indexRefused(o client.Object) []string {
	lb, ok := o.(*v1.LoadBalancer)
	if !ok {
		return nil
	}
	c := meta.FindStatusCondition(lb.Status.Conditions, v1.ConditionAccepted)
	if c == nil || c.Status != metav1.ConditionFalse {
		return nil
	}
	return []string{refusedAny, c.Reason}
}

// admissionRelevant passes the LoadBalancer updates admission acts on: a new
// generation (spec), the start of a deletion, or our finalizer taken away.
// Status writes (ours, the snapshot's Programmed) are not among them.
var admissionRelevant = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		return e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration() ||
			e.ObjectOld.GetDeletionTimestamp().IsZero() != e.ObjectNew.GetDeletionTimestamp().IsZero() ||
			controllerutil.ContainsFinalizer(e.ObjectOld, Finalizer) && !controllerutil.ContainsFinalizer(e.ObjectNew, Finalizer)
	},
}

// specOrDeletion passes Tenant updates of its spec or its deletion, not of its status.
var specOrDeletion = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		return e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration() ||
			e.ObjectOld.GetDeletionTimestamp().IsZero() != e.ObjectNew.GetDeletionTimestamp().IsZero()
	},
}

// counted, countedUpdate and uncounted keep the per-namespace count of live
// LoadBalancers. Within a tenant's limits a LoadBalancer's admission depends
// on no other; over them (or when a deletion or change may bring the tenant
// back under them) every LoadBalancer of the tenant is looked at again,
// oldest first.
func (r *LoadBalancerReconciler) counted(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	if !e.Object.GetDeletionTimestamp().IsZero() {
		return
	}
	n := r.setLive(e.Object, true)
	r.overLimits(ctx, e.Object.GetNamespace(), n, q)
}

func (r *LoadBalancerReconciler) countedUpdate(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	deleting := !e.ObjectNew.GetDeletionTimestamp().IsZero()
	n := r.setLive(e.ObjectNew, !deleting)
	switch {
	case deleting && e.ObjectOld.GetDeletionTimestamp().IsZero():
		r.overLimits(ctx, e.ObjectNew.GetNamespace(), n+1, q)
	case e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration():
		// A changed global name can move the address count.
		r.overLimits(ctx, e.ObjectNew.GetNamespace(), n, q)
	}
}

func (r *LoadBalancerReconciler) uncounted(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	n := r.setLive(e.Object, false)
	r.overLimits(ctx, e.Object.GetNamespace(), n+1, q)
}

// setLive records whether a LoadBalancer counts and returns its namespace's count.
func (r *LoadBalancerReconciler) setLive(o client.Object, live bool) int {
	r.liveMu.Lock()
	defer r.liveMu.Unlock()
	ns := r.live[o.GetNamespace()]
	if live {
		if ns == nil {
			ns = map[string]bool{}
			r.live[o.GetNamespace()] = ns
		}
		ns[o.GetName()] = true
	} else {
		delete(ns, o.GetName())
		if len(ns) == 0 {
			delete(r.live, o.GetNamespace())
		}
	}
	return len(ns)
}

// liveCount is how many live LoadBalancers the watch has seen in ns.
func (r *LoadBalancerReconciler) liveCount(ns string) int {
	r.liveMu.Lock()
	defer r.liveMu.Unlock()
	return len(r.live[ns])
}

// underLimits reports whether n LoadBalancers are within both of the
// tenant's count limits (addresses: LoadBalancers sharing a global name hold
// one, so n bounds them).
func underLimits(t *v1.Tenant, n int) bool {
	return n <= t.Spec.Limits.LoadBalancers() && n <= t.Spec.Limits.Addresses()
}

// overLimits enqueues every LoadBalancer of ns when n of them would exceed
// the tenant's limits.
func (r *LoadBalancerReconciler) overLimits(ctx context.Context, ns string, n int, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	name, ok := tenant.Of(ns)
	if !ok {
		return
	}
	if t, err := r.tenantNamed(ctx, name); err != nil || t == nil || underLimits(t, n) {
		return
	}
	for _, req := range r.inNamespaces(ctx, ns) {
		q.Add(req)
	}
}

// waiting lists the LoadBalancers refused for one of reasons (all namespaces).
func (r *LoadBalancerReconciler) waiting(ctx context.Context, reasons ...string) []v1.LoadBalancer {
	var out []v1.LoadBalancer
	for _, reason := range reasons {
		var list v1.LoadBalancerList
		if err := r.Client.List(ctx, &list, client.MatchingFields{IndexRefused: reason}); err != nil {
			continue
		}
		out = append(out, list.Items...)
	}
	return out
}

// canUse reports whether a LoadBalancer refused for want of an address may
// get addr now: it asked for addr, or it takes any address of a pool that
// contains addr.
func (r *LoadBalancerReconciler) canUse(ctx context.Context, lb *v1.LoadBalancer, addr netip.Addr) bool {
	c := meta.FindStatusCondition(lb.Status.Conditions, v1.ConditionAccepted)
	if c == nil {
		return false
	}
	if c.Reason == v1.ReasonAddressInUse {
		requested, err := netip.ParseAddr(string(lb.Spec.LoadBalancerIP))
		return err == nil && requested.Unmap() == addr
	}
	name, ok := tenant.Of(lb.Namespace)
	if !ok {
		return false
	}
	t, err := r.tenantNamed(ctx, name)
	if err != nil || t == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.pools[t.Spec.AddressPool]
	// A pool not parsed yet cannot be ruled out.
	return p == nil || p.ranges == nil || p.ranges.Contains(addr)
}
