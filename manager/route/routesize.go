package route

import (
	"encoding/json"
	"slices"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// Per-item allowances of ConfigBytes for what the translation adds around a
// Route's own fields: resource names, field tags and lengths, the virtual
// host's domains and per-route defaults (timeouts, retry and hash policies).
const (
	virtualHostBytes = 64
	routeBytes       = 96
	backendBytes     = 48
	// retryPolicyBytes covers the retry policy (envoy/translate: about 480
	// bytes) every virtual host carries, and a route with a backend timeout
	// repeats with its per_try_timeout.
	retryPolicyBytes = 512
)

// ConfigBytes estimates what a Route adds to its fleet's route configuration
// when served for hostnames: one virtual host per hostname (two when a TLS
// Secret covers it: one on HTTP, one on HTTPS), in which every
// match of every rule is an Envoy route carrying that match, the rule's
// filters and timeouts and its weighted backends (named by tenant, source
// namespace, Service and port). Each field is counted as its JSON encoding,
// which is longer than its protobuf encoding, plus a fixed allowance per
// item for what the translation adds; so the estimate is an upper bound of
// the proto size, deterministic and computable without translating.
func ConfigBytes(tenantName string, rt *v1.Route, hostnames []v1.Hostname) int {
	perHost := 0
	for i := range rt.Spec.Rules {
		rule := &rt.Spec.Rules[i]
		action := jsonSize(rule.Filters) + jsonSize(rule.Timeouts)
		if rule.Timeouts != nil && rule.Timeouts.BackendRequest != nil || rule.Retry != nil {
			action += retryPolicyBytes + jsonSize(rule.Retry)
		}
		for _, b := range rule.Backends {
			// The cluster name (tenant/namespace/service/protocol/port) and its weight.
			action += backendBytes + len(tenantName) + len(rt.Spec.Source.Namespace) + len(b.ServiceName)
		}
		matches := max(len(rule.Matches), 1)
		for j := 0; j < matches; j++ {
			size := routeBytes + len(tenantName) + len(rt.Name) + action
			if j < len(rule.Matches) {
				size += jsonSize(rule.Matches[j])
			}
			perHost += size
		}
	}
	total := 0
	for _, h := range hostnames {
		copies := 1
		if slices.ContainsFunc(rt.Spec.TLS, func(tl v1.RouteTLS) bool { return CoveredBy(tl.Hostnames, h) }) {
			copies = 2 // served on both the HTTP and the HTTPS route configuration
		}
		total += copies * (virtualHostBytes + retryPolicyBytes + 2*len(h) + perHost)
	}
	return total
}

func jsonSize(v any) int {
	b, err := json.Marshal(v)
	if err != nil {
		return 0 // API types always encode
	}
	return len(b)
}
