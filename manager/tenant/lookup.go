package tenant

import (
	"context"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// Lookup is the cache's Tenant of that name, or nil when there is none,
// without a deep copy: a Tenant's status carries a record per claimed
// hostname, and copying it on every event of every LoadBalancer and Route
// cost more than the rest of the work. Its slices and maps are shared with
// the cache, so only read it.
func Lookup(ctx context.Context, c client.Reader, name string) (*v1.Tenant, error) {
	t := &v1.Tenant{}
	if err := c.Get(ctx, types.NamespacedName{Name: name}, t, client.UnsafeDisableDeepCopy); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	return t, nil
}
