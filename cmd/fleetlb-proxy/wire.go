package main

import (
	"github.com/go-logr/logr"

	"github.com/fleetlb/fleetlb/internal/proxy"
	"github.com/fleetlb/fleetlb/internal/proxy/l7"
	"github.com/fleetlb/fleetlb/internal/proxy/upstream"
)

// dataPlane wires the cluster manager (L4 and L7 upstreams) and the HTTP
// listeners into the proxy core.
func dataPlane(log logr.Logger) (proxy.Options, func(), error) {
	m := upstream.NewManager(log.WithName("upstream"))
	return proxy.Options{
		Clusters:               m,
		ValidateCluster:        upstream.ValidateCluster,
		ValidateLoadAssignment: upstream.ValidateLoadAssignment,
		HTTP:                   l7.NewSet(m),
	}, m.Close, nil
}
