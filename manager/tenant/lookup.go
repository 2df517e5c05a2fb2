package tenant

import (
	"context"
	"strings"

	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// IndexName indexes Tenants by their name: a Tenant's status carries a
// record per claimed hostname, so a Get that deep-copies it on every event
// of every LoadBalancer and Route costs more than the rest of the work.
const IndexName = "fleetlb.io/tenant-name"

// IndexByName registers IndexName; controllers that Lookup call it, and a
// second registration on the same manager is no error.
func IndexByName(ctx context.Context, indexer client.FieldIndexer) error {
	err := indexer.IndexField(ctx, &v1.Tenant{}, IndexName, func(o client.Object) []string { return []string{o.GetName()} })
	if err != nil && strings.Contains(err.Error(), "indexer conflict") {
		return nil
	}
	return err
}

// Lookup is the cache's Tenant of that name, or nil when there is none,
// without a copy: it is shared with the cache, so only read it.
func Lookup(ctx context.Context, c client.Reader, name string) (*v1.Tenant, error) {
	var list v1.TenantList
	if err := c.List(ctx, &list, client.MatchingFields{IndexName: name}, client.UnsafeDisableDeepCopy); err != nil || len(list.Items) == 0 {
		return nil, err
	}
	return &list.Items[0], nil
}
