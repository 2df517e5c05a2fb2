package testenv

import (
	"context"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// ReleaseAddresses plays, for tests of the ccm alone, the manager's part the
// ccm waits for: once a management LoadBalancer is being deleted, its
// address is released and the manager's finalizer (which the ccm set at
// create) removed.
func ReleaseAddresses(mgr ctrl.Manager, mgmt cluster.Cluster) error {
	return ctrl.NewControllerManagedBy(mgr).
		WatchesRawSource(source.Kind(mgmt.GetCache(), &v1.LoadBalancer{}, &handler.TypedEnqueueRequestForObject[*v1.LoadBalancer]{})).
		Named("test-address-release").
		Complete(reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			var lb v1.LoadBalancer
			if err := mgmt.GetClient().Get(ctx, req.NamespacedName, &lb); err != nil {
				return reconcile.Result{}, client.IgnoreNotFound(err)
			}
			if lb.DeletionTimestamp.IsZero() || !controllerutil.RemoveFinalizer(&lb, v1.FinalizerAddressRelease) {
				return reconcile.Result{}, nil
			}
			return reconcile.Result{}, client.IgnoreNotFound(mgmt.GetClient().Update(ctx, &lb))
		}))
}
