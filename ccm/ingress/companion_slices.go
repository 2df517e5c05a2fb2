package ingress

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// SliceMirrorManagedBy is the endpointslice.kubernetes.io/managed-by of the
// EndpointSlices the ccm mirrors onto companions.
const SliceMirrorManagedBy = "ccm.fleetlb.io"

// CompanionSlicesReconciler gives the companion of a Service without a
// selector (its EndpointSlices are written by hand or by another
// controller) the same endpoints: a copy of each of the original's
// EndpointSlices, owned by the companion, so the companion's node port
// reaches what the original's cluster IP reaches. A companion of a Service
// with a selector copies the selector and needs no copies.
type CompanionSlicesReconciler struct {
	Tenant client.Client
}

// SetupWithManager registers the controller; requests name original Services.
func (r *CompanionSlicesReconciler) SetupWithManager(mgr ctrl.Manager) error {
	toOriginal := func(_ context.Context, o client.Object) []reconcile.Request {
		name := o.GetLabels()[LabelCompanionOf]
		if name == "" {
			if _, isSlice := o.(*discoveryv1.EndpointSlice); isSlice {
				name = o.GetLabels()[discoveryv1.LabelServiceName]
			} else {
				name = o.GetName()
			}
		}
		if name == "" {
			return nil
		}
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("companion-endpointslices").
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(toOriginal)).
		Watches(&discoveryv1.EndpointSlice{}, handler.EnqueueRequestsFromMapFunc(toOriginal)).
		Complete(r)
}

// Reconcile implements reconcile.Reconciler.
func (r *CompanionSlicesReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	want := map[string]*discoveryv1.EndpointSlice{}
	var companion, svc corev1.Service
	err := r.Tenant.Get(ctx, types.NamespacedName{Namespace: req.Namespace, Name: CompanionName(req.Name)}, &companion)
	if client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, err
	}
	if err == nil && isCompanionOf(&companion, req.Name) && companion.DeletionTimestamp.IsZero() {
		switch err := r.Tenant.Get(ctx, req.NamespacedName, &svc); {
		case apierrors.IsNotFound(err):
		case err != nil:
			return ctrl.Result{}, err
		case len(svc.Spec.Selector) == 0:
			var orig discoveryv1.EndpointSliceList
			if err := r.Tenant.List(ctx, &orig, client.InNamespace(req.Namespace), client.MatchingLabels{discoveryv1.LabelServiceName: req.Name}); err != nil {
				return ctrl.Result{}, err
			}
			for i := range orig.Items {
				s := &orig.Items[i]
				m := &discoveryv1.EndpointSlice{
					ObjectMeta: metav1.ObjectMeta{
						Namespace: req.Namespace, Name: CompanionName(s.Name),
						Labels: map[string]string{discoveryv1.LabelServiceName: companion.Name, discoveryv1.LabelManagedBy: SliceMirrorManagedBy,
							LabelCompanionOf: req.Name},
						OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(&companion, corev1.SchemeGroupVersion.WithKind("Service"))},
					},
					AddressType: s.AddressType, Ports: s.Ports, Endpoints: s.Endpoints,
				}
				want[m.Name] = m
			}
		}
	}
	var have discoveryv1.EndpointSliceList
	if err := r.Tenant.List(ctx, &have, client.InNamespace(req.Namespace),
		client.MatchingLabels{LabelCompanionOf: req.Name, discoveryv1.LabelManagedBy: SliceMirrorManagedBy}); err != nil {
		return ctrl.Result{}, err
	}
	for i := range have.Items {
		s := &have.Items[i]
		w := want[s.Name]
		delete(want, s.Name)
		switch {
		case w == nil:
			if err := r.Tenant.Delete(ctx, s); client.IgnoreNotFound(err) != nil {
				return ctrl.Result{}, err
			}
		case !equality.Semantic.DeepEqual(w.Ports, s.Ports) || !equality.Semantic.DeepEqual(w.Endpoints, s.Endpoints) ||
			!equality.Semantic.DeepEqual(w.Labels, s.Labels) || !equality.Semantic.DeepEqual(w.OwnerReferences, s.OwnerReferences):
			s.Ports, s.Endpoints, s.Labels, s.OwnerReferences = w.Ports, w.Endpoints, w.Labels, w.OwnerReferences
			if err := r.Tenant.Update(ctx, s); err != nil {
				return ctrl.Result{}, err
			}
		}
	}
	for _, m := range want {
		if err := r.Tenant.Create(ctx, m); client.IgnoreAlreadyExists(err) != nil {
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{}, nil
}
