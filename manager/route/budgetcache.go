package route

import (
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// budgetCache keeps each tenant's budget between admissions, shared by the
// workers: a budget is made from the tenant's spec and its Routes' names,
// creation times and specs, so it holds until one of those changes. Every
// event handler that enqueues work because of such a change calls invalidate
// first (in the same handler: handlers of different watches run in no
// particular order), so a reconcile it triggers never reads a budget made
// before the change. A budget computed while an invalidation happened is
// used by the reconcile that computed it (it read the cache of its time, as
// any reconcile does) but not kept.
type budgetCache struct {
	mu      sync.Mutex
	tenants map[string]*budgetEntry
}

type budgetEntry struct {
	// computing lets one worker at a time compute the tenant's budget; the
	// others wait and take its result when nothing changed meanwhile.
	computing sync.Mutex
	// version counts invalidations (guarded by budgetCache.mu, as the rest).
	version uint64
	b       *budget
	// uid and generation of the Tenant the budget was made for.
	uid        types.UID
	generation int64
}

func (c *budgetCache) entry(tenantName string) *budgetEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tenants == nil {
		c.tenants = map[string]*budgetEntry{}
	}
	e := c.tenants[tenantName]
	if e == nil {
		e = &budgetEntry{}
		c.tenants[tenantName] = e
	}
	return e
}

// invalidate drops a tenant's budget: its spec or one of its Routes changed.
func (c *budgetCache) invalidate(tenantName string) {
	e := c.entry(tenantName)
	c.mu.Lock()
	e.version++
	e.b = nil
	c.mu.Unlock()
}

// forget drops a deleted tenant's entry.
func (c *budgetCache) forget(tenantName string) {
	c.mu.Lock()
	if e := c.tenants[tenantName]; e != nil {
		e.version++
		e.b = nil
		delete(c.tenants, tenantName)
	}
	c.mu.Unlock()
}

// get returns the tenant's budget for the Tenant of uid and generation,
// computing it when none is kept. A nil cache always computes.
func (c *budgetCache) get(tenantName string, uid types.UID, generation int64, compute func() (*budget, error)) (*budget, error) {
	if c == nil {
		return compute()
	}
	e := c.entry(tenantName)
	lookup := func() (*budget, uint64) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if e.b != nil && e.uid == uid && e.generation == generation {
			return e.b, e.version
		}
		return nil, e.version
	}
	if b, _ := lookup(); b != nil {
		return b, nil
	}
	e.computing.Lock()
	defer e.computing.Unlock()
	// Read the version before the cache: a change the computation misses
	// was made (and invalidated) after this point.
	b, version := lookup()
	if b != nil {
		return b, nil
	}
	b, err := compute()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if e.version == version && c.tenants[tenantName] == e {
		e.b, e.uid, e.generation = b, uid, generation
	}
	c.mu.Unlock()
	return b, nil
}
