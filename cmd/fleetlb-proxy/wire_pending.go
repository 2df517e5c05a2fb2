//go:build !fleetlb_dataplane

package main

import (
	"errors"

	"github.com/go-logr/logr"

	"github.com/fleetlb/fleetlb/internal/proxy"
)

// dataPlane is replaced by wire.go once internal/proxy/upstream and internal/proxy/l7
// exist (build with -tags fleetlb_dataplane, then delete this file and the tags).
func dataPlane(logr.Logger) (proxy.Options, func(), error) {
	return proxy.Options{}, func() {}, errors.New("built without the data plane: internal/proxy/upstream and internal/proxy/l7 are not wired in (build tag fleetlb_dataplane)")
}
