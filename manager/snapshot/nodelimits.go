package snapshot

import (
	"cmp"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// NodesWithinLimits is the part of a tenant's node set its limits let the
// fleet serve: the first maxNodes nodes by name, and of their addresses the
// first maxEndpointsPerBackend (every backend of the tenant gets one endpoint
// per address, so this bounds the endpoints of each). Ordering by name keeps
// the choice stable as nodes come and go. refused says what was left out and
// why ("" when nothing was).
func NodesWithinLimits(t *v1.Tenant, nodes *v1.TenantNodes) (kept *v1.TenantNodes, refused string) {
	maxNodes, maxEndpoints := t.Spec.Limits.Nodes(), t.Spec.Limits.EndpointsPerBackend()
	total := 0
	for _, n := range nodes.Spec.Nodes {
		total += len(n.Addresses)
	}
	if len(nodes.Spec.Nodes) <= maxNodes && total <= maxEndpoints {
		return nodes, ""
	}
	sorted := slices.Clone(nodes.Spec.Nodes)
	slices.SortFunc(sorted, func(a, b v1.TenantNode) int { return cmp.Compare(a.Name, b.Name) })
	out := nodes.DeepCopy()
	out.Spec.Nodes = nil
	endpoints, cutNodes, cutAddrs := 0, 0, 0
	for i, n := range sorted {
		if i >= maxNodes {
			cutNodes++
			continue
		}
		room := maxEndpoints - endpoints
		if room <= 0 {
			cutAddrs += len(n.Addresses)
			continue
		}
		if len(n.Addresses) > room {
			cutAddrs += len(n.Addresses) - room
			n.Addresses = n.Addresses[:room]
		}
		endpoints += len(n.Addresses)
		out.Spec.Nodes = append(out.Spec.Nodes, n)
	}
	switch {
	case cutNodes > 0 && cutAddrs > 0:
		refused = fmt.Sprintf("%d nodes over the tenant's limit maxNodes=%d and %d addresses over maxEndpointsPerBackend=%d get no traffic",
			cutNodes, maxNodes, cutAddrs, maxEndpoints)
	case cutNodes > 0:
		refused = fmt.Sprintf("%d nodes over the tenant's limit maxNodes=%d get no traffic (the first by name are served)", cutNodes, maxNodes)
	default:
		refused = fmt.Sprintf("%d node addresses over the tenant's limit maxEndpointsPerBackend=%d get no traffic (the first by node name are served)",
			cutAddrs, maxEndpoints)
	}
	return out, refused
}

// tellNodeLimit makes a refusal by the node limits a Warning event on the
// tenant's TenantNodes, once per change, from the replica that writes status.
func (b *Builder) tellNodeLimit(nodes *v1.TenantNodes, refused string) {
	if b.Recorder == nil || nodes.Name == "" || (b.WriteStatus != nil && !b.WriteStatus()) {
		return
	}
	if refused == "" {
		b.nodeLimits.Delete(nodes.Namespace)
		return
	}
	if last, ok := b.nodeLimits.Swap(nodes.Namespace, refused); ok && last == refused {
		return
	}
	b.Recorder.Eventf(nodes, nil, corev1.EventTypeWarning, v1.ReasonLimitExceeded, "ServeNodes", "%s", refused)
}
