package admission

import (
	"fmt"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/manager/backends"
)

// checkNodePorts refuses a LoadBalancer whose traffic or health-check node
// port lies outside its Tenant's nodePortRange: a tenant may send the fleet
// only to its nodes' NodePorts, never to another service listening on them.
func checkNodePorts(t *v1.Tenant, lb *v1.LoadBalancer) (reason, msg string) {
	for _, p := range lb.Spec.Ports {
		if why := backends.CheckNodePort(t, int32(p.NodePort)); why != "" {
			return v1.ReasonNodePortNotAllowed, fmt.Sprintf("port %d/%s: %s", p.Port, p.Protocol, why)
		}
	}
	if h := lb.Spec.HealthCheck; h != nil && h.NodePort != nil {
		if why := backends.CheckNodePort(t, int32(*h.NodePort)); why != "" {
			return v1.ReasonNodePortNotAllowed, "health check: " + why
		}
	}
	return "", ""
}
