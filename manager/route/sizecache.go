package route

import (
	"slices"
	"sync"

	"k8s.io/apimachinery/pkg/types"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// sizeCache remembers ConfigBytes per Route: a tenant's budget sums the size
// of every one of its Routes on each admission, and the size only changes
// with the Route's spec (its generation) or the hostnames it is served for.
type sizeCache struct {
	mu      sync.Mutex
	entries map[types.UID]sizeEntry
}

type sizeEntry struct {
	tenant     string
	generation int64
	hostnames  []v1.Hostname
	size       int
}

// configBytes is ConfigBytes, from the cache when the Route, its generation
// and the hostnames are the same as last time. A nil cache computes it.
func (s *sizeCache) configBytes(tenantName string, rt *v1.Route, hostnames []v1.Hostname) int {
	if s == nil || rt.UID == "" {
		return ConfigBytes(tenantName, rt, hostnames)
	}
	s.mu.Lock()
	e, ok := s.entries[rt.UID]
	s.mu.Unlock()
	if ok && e.tenant == tenantName && e.generation == rt.Generation && slices.Equal(e.hostnames, hostnames) {
		return e.size
	}
	size := ConfigBytes(tenantName, rt, hostnames)
	s.mu.Lock()
	if s.entries == nil {
		s.entries = map[types.UID]sizeEntry{}
	}
	s.entries[rt.UID] = sizeEntry{tenant: tenantName, generation: rt.Generation, hostnames: slices.Clone(hostnames), size: size}
	s.mu.Unlock()
	return size
}

// forget drops a deleted Route's entry.
func (s *sizeCache) forget(uid types.UID) {
	s.mu.Lock()
	delete(s.entries, uid)
	s.mu.Unlock()
}
