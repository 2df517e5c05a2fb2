// Package nodes is the ccm's Node controller: it keeps the tenant's single
// TenantNodes object in the management cluster equal to the tenant Nodes that
// may serve NodePorts, so one node change rewrites one object.
package nodes

import (
	"cmp"
	"context"
	"slices"

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
}

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
	if equality.Semantic.DeepEqual(cur.Spec, want) {
		return ctrl.Result{}, nil // nothing changed: nothing written
	}
	patch := client.MergeFrom(cur.DeepCopy())
	cur.Spec = want
	return ctrl.Result{}, r.Mgmt.Patch(ctx, &cur, patch)
}
