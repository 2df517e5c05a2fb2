package main

import (
	"flag"

	"github.com/go-logr/logr"

	"github.com/fleetlb/fleetlb/internal/proxy"
	"github.com/fleetlb/fleetlb/internal/proxy/l7"
	"github.com/fleetlb/fleetlb/internal/proxy/upstream"
)

// Envoy's edge best practice for global_downstream_max_connections; the Envoy
// bootstrap of a fleet sets the same value.
var maxConnections = flag.Int64("max-connections", 50000,
	"cap on open downstream TCP connections over all listeners; past it new connections are closed at once (0: no cap)")

// dataPlane wires the cluster manager (L4 and L7 upstreams) and the HTTP
// listeners into the proxy core.
func dataPlane(log logr.Logger) (proxy.Options, func(), error) {
	m := upstream.NewManager(log.WithName("upstream"))
	return proxy.Options{
		Clusters:               m,
		ValidateCluster:        upstream.ValidateCluster,
		ValidateLoadAssignment: upstream.ValidateLoadAssignment,
		HTTP:                   l7.NewSet(m),
		MaxConnections:         *maxConnections,
	}, m.Close, nil
}
