package tenant

import v1 "github.com/fleetlb/fleetlb/api/v1alpha1"

// GroupKey names the set of tenants that may share hostnames and global
// names: "group:<group>" for a tenant of a group, "tenant:<name>" for one
// without. The prefixes keep the two kinds apart, so no group can take the
// key of a tenant that has none (a group named like a tenant, or like its
// namespace, shares nothing with it).
func GroupKey(t *v1.Tenant) string {
	if t.Spec.Group != "" {
		return "group:" + t.Spec.Group
	}
	return "tenant:" + t.Name
}
