// Package nodes is the ccm's Node controller: it keeps the tenant's single
// TenantNodes object in the management cluster equal to the tenant Nodes that
// may serve NodePorts, so one node change rewrites one object.
package nodes

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// LabelExclude keeps a node out of every load balancer (the upstream well-known label).
const LabelExclude = "node.kubernetes.io/exclude-from-external-load-balancers"

// Reconciler writes TenantNodes/default from the tenant's Nodes.
type Reconciler struct {
	Tenant      client.Client
	Mgmt        client.Client
	Namespace   string
	ClusterName string
	// AddressType of the node addresses traffic is sent to (InternalIP by default).
	AddressType corev1.NodeAddressType
	// Recorder, when set, puts a warning event on each Node whose address the
	// fleet refuses (TenantNodes status); the refusal is logged either way.
	Recorder recorder.EventRecorder

	mu       sync.Mutex
	reported map[string]string // Node → refusal last reported
}

// ReasonNodeAddressRefused is the reason of the event on a tenant Node whose
// address the fleet does not send traffic to.
const ReasonNodeAddressRefused = "NodeAddressRefused"

// every event maps to the one object this controller writes.
var only = []reconcile.Request{{NamespacedName: types.NamespacedName{Name: v1.TenantNodesName}}}

// SetupWithManager registers the controller; changes made to TenantNodes in
// the management cluster by anyone else are corrected.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager, mgmt cluster.Cluster) error {
	if r.AddressType == "" {
		r.AddressType = corev1.NodeInternalIP
	}
	all := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request { return only })
	return ctrl.NewControllerManagedBy(mgr).
		Named("nodes").
		Watches(&corev1.Node{}, all).
		WatchesRawSource(source.Kind(mgmt.GetCache(), &v1.TenantNodes{},
			handler.TypedEnqueueRequestsFromMapFunc(func(context.Context, *v1.TenantNodes) []reconcile.Request { return only }))).
		Complete(r)
}

// Desired is the node list for a set of Nodes: sorted, excluded and
// address-less nodes left out.
func (r *Reconciler) Desired(nodes []corev1.Node) []v1.TenantNode {
	var out []v1.TenantNode
	for _, n := range nodes {
		if _, excluded := n.Labels[LabelExclude]; excluded || !n.DeletionTimestamp.IsZero() {
			continue
		}
		tn := v1.TenantNode{Name: n.Name, Zone: n.Labels[corev1.LabelTopologyZone]}
		for _, a := range n.Status.Addresses {
			if a.Type == r.AddressType && !slices.Contains(tn.Addresses, v1.IPAddress(a.Address)) {
				tn.Addresses = append(tn.Addresses, v1.IPAddress(a.Address))
			}
		}
		if len(tn.Addresses) == 0 {
			continue
		}
		slices.Sort(tn.Addresses)
		out = append(out, tn)
	}
	slices.SortFunc(out, func(a, b v1.TenantNode) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// Reconcile implements reconcile.Reconciler.
func (r *Reconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	var nodes corev1.NodeList
	if err := r.Tenant.List(ctx, &nodes); err != nil {
		return ctrl.Result{}, err
	}
	want := v1.TenantNodesSpec{Cluster: r.ClusterName, Nodes: r.Desired(nodes.Items)}

	var cur v1.TenantNodes
	err := r.Mgmt.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: v1.TenantNodesName}, &cur)
	if apierrors.IsNotFound(err) {
		return ctrl.Result{}, r.Mgmt.Create(ctx, &v1.TenantNodes{
			ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: v1.TenantNodesName},
			Spec:       want,
		})
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	r.report(ctx, &cur, nodes.Items)
	if equality.Semantic.DeepEqual(cur.Spec, want) {
		return ctrl.Result{}, nil // nothing changed: nothing written
	}
	patch := client.MergeFrom(cur.DeepCopy())
	cur.Spec = want
	return ctrl.Result{}, r.Mgmt.Patch(ctx, &cur, patch)
}

// report shows the tenant what the manager refused (status of the current
// generation only): once per change, per Node.
func (r *Reconciler) report(ctx context.Context, tn *v1.TenantNodes, nodes []corev1.Node) {
	if tn.Status.ObservedGeneration != tn.Generation {
		return // not yet checked by the manager
	}
	byNode := map[string][]string{}
	for _, ra := range tn.Status.Refused {
		byNode[ra.Node] = append(byNode[ra.Node], ra.Message)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.reported == nil {
		r.reported = map[string]string{}
	}
	for name := range r.reported {
		if _, ok := byNode[name]; !ok {
			delete(r.reported, name)
		}
	}
	log := ctrl.LoggerFrom(ctx)
	for i := range nodes {
		n := &nodes[i]
		msgs, ok := byNode[n.Name]
		if !ok {
			continue
		}
		msg := "the load balancer fleet sends this node no traffic: " + strings.Join(msgs, "; ")
		if len(msg) > 1024 { // an event's note holds at most 1024 bytes
			msg = msg[:1021] + "..."
		}
		if r.reported[n.Name] == msg {
			continue
		}
		r.reported[n.Name] = msg
		log.Info("node address refused by the management cluster", "node", n.Name, "reason", msg)
		if r.Recorder != nil {
			r.Recorder.Eventf(n, nil, corev1.EventTypeWarning, ReasonNodeAddressRefused, "LoadBalance", "%s", msg)
		}
	}
}
