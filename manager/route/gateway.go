package route

import v1 "github.com/fleetlb/fleetlb/api/v1alpha1"

// OnGateways reports whether a Route is served on listeners of its tenant's
// Gateways (each on the Gateway's own VIP) rather than the fleet's shared VIP.
func OnGateways(rt *v1.Route) bool { return len(rt.Spec.Parents) > 0 }

// ClaimedHostnames are the hostnames a Route claims across tenants: those of
// a Route on the shared VIP. A Route on its Gateways' listeners claims none:
// its hostnames only filter the traffic of the tenant's own VIP, so they
// neither need nor take ownership (DNS records and cert-manager
// certificates follow ownership, so such a Route gets neither).
func ClaimedHostnames(rt *v1.Route) []v1.Hostname {
	if OnGateways(rt) {
		return nil
	}
	return rt.Spec.Hostnames
}

// gatewayHosts sizes a Gateway Route's route configuration: one virtual host
// per hostname, or one for every host.
func gatewayHosts(rt *v1.Route) []v1.Hostname {
	if len(rt.Spec.Hostnames) == 0 {
		return []v1.Hostname{"*"}
	}
	return rt.Spec.Hostnames
}
