//go:build !fleetlb_dataplane

package main

import (
	"github.com/go-logr/logr"

	"github.com/fleetlb/fleetlb/internal/proxy"
	"github.com/fleetlb/fleetlb/internal/proxy/upstream"
)

// dataPlane serves L4 (TCP and UDP) through the cluster manager. HTTP
// listeners are NACKed until internal/proxy/l7 exists: then wire.go (build tag
// fleetlb_dataplane) takes over and this file goes.
func dataPlane(log logr.Logger) (proxy.Options, func(), error) {
	m := upstream.NewManager(log.WithName("upstream"))
	return proxy.Options{
		Clusters:               m,
		ValidateCluster:        upstream.ValidateCluster,
		ValidateLoadAssignment: upstream.ValidateLoadAssignment,
	}, m.Close, nil
}
