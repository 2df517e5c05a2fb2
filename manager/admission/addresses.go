package admission

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/manager/ipam"
	"github.com/fleetlb/fleetlb/manager/pool"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// AnnotationQuarantine, on an AddressPool, persists the addresses of that pool
// in quarantine, so a manager restart does not hand a just-released address
// to another tenant group: a JSON list of {"address", "group", "until"}.
// Only the manager writes it (tenants cannot read AddressPools).
const AnnotationQuarantine = "fleetlb.io/address-quarantine"

// ReasonAddressQuarantined: the requested address was released by another
// tenant group less than the quarantine ago.
const ReasonAddressQuarantined = "AddressQuarantined"

// groupOf is the key of a tenant's group for quarantine and global names.
// "group:" and "tenant:" keep a group named like a tenant apart from it.
func groupOf(t *v1.Tenant) string { return tenant.GroupKey(t) }

// fleetGroup is the group of a ProxyFleet's VIP.
func fleetGroup(name string) string { return "proxyfleet:" + name }

// quarantined is one entry of AnnotationQuarantine.
type quarantined struct {
	Address string    `json:"address"`
	Group   string    `json:"group"`
	Until   time.Time `json:"until"`
}

func (r *LoadBalancerReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// poolDef is an AddressPool's parsed ranges at one generation.
type poolDef struct {
	generation int64
	ranges     *ipam.Pool
	err        error // why the pool's ranges are unusable
}

// poolLocked returns the pool's ranges, and the allocator rebuilt first.
func (r *LoadBalancerReconciler) poolLocked(ctx context.Context, ap *v1.AddressPool) (*poolDef, error) {
	if err := r.spaceLocked(ctx); err != nil {
		return nil, err
	}
	if p := r.pools[ap.Name]; p != nil && p.generation == ap.Generation {
		return p, nil
	}
	if old := r.pools[ap.Name]; old != nil && old.ranges != nil {
		r.space.Forget(old.ranges)
	}
	p := &poolDef{generation: ap.Generation}
	p.ranges, p.err = pool.Parse(ap)
	r.pools[ap.Name] = p
	return p, nil
}

// spaceLocked rebuilds the allocator, once, from every ProxyFleet's and
// LoadBalancer's status and every pool's persisted quarantine, before it
// hands out anything: that keeps addresses stable across restarts and never
// gives one address to two objects. Objects that are gone hold nothing.
func (r *LoadBalancerReconciler) spaceLocked(ctx context.Context) error {
	if r.space != nil {
		return nil
	}
	space := ipam.NewAllocator(r.Quarantine)
	members := map[string]string{}
	// Fleet VIPs first: they are infrastructure every tenant's routes depend on.
	var fleets v1.ProxyFleetList
	if err := r.Client.List(ctx, &fleets); err != nil {
		return err
	}
	for _, f := range fleets.Items {
		addrs := f.Status.Addresses
		if f.Spec.VIP != "" {
			addrs = append(slices.Clone(addrs), v1.Address{IP: f.Spec.VIP})
		}
		for _, a := range addrs {
			if addr, err := netip.ParseAddr(string(a.IP)); err == nil {
				_ = space.Reserve(fleetOwner(f.Name), fleetGroup(f.Name), addr)
			}
		}
	}
	var tenants v1.TenantList
	if err := r.Client.List(ctx, &tenants); err != nil {
		return err
	}
	byName := map[string]*v1.Tenant{}
	for i := range tenants.Items {
		byName[tenants.Items[i].Name] = &tenants.Items[i]
	}
	var lbs v1.LoadBalancerList
	if err := r.Client.List(ctx, &lbs); err != nil {
		return err
	}
	// Oldest first: if status ever disagreed, the older claim keeps the address.
	slices.SortFunc(lbs.Items, func(a, b v1.LoadBalancer) int {
		return cmp.Or(a.CreationTimestamp.Compare(b.CreationTimestamp.Time), cmp.Compare(owner(&a), owner(&b)))
	})
	for i := range lbs.Items {
		lb := &lbs.Items[i]
		name, _ := tenant.Of(lb.Namespace)
		t := byName[name]
		if t == nil {
			t = &v1.Tenant{}
			t.Name = name
		}
		who := holder(t, lb)
		for _, a := range lb.Status.Addresses {
			if addr, err := netip.ParseAddr(string(a.IP)); err == nil && space.Reserve(who, groupOf(t), addr) == nil {
				members[owner(lb)] = who
			}
		}
	}
	var pools v1.AddressPoolList
	if err := r.Client.List(ctx, &pools); err != nil {
		return err
	}
	now := r.now()
	for _, ap := range pools.Items {
		var entries []quarantined
		if s := ap.Annotations[AnnotationQuarantine]; s != "" && json.Unmarshal([]byte(s), &entries) == nil {
			for _, e := range entries {
				if addr, err := netip.ParseAddr(e.Address); err == nil {
					space.Restore(addr, e.Group, e.Until, now)
				}
			}
		}
	}
	r.space, r.members = space, members
	return nil
}

// setMember records that a LoadBalancer uses its holder's address, and lets
// go of the holder it used before (a global name it left).
func (r *LoadBalancerReconciler) setMemberLocked(lbOwner, who string) (netip.Addr, bool) {
	prev, ok := r.members[lbOwner]
	r.members[lbOwner] = who
	if !ok || prev == who {
		return netip.Addr{}, false
	}
	return r.dropLocked(prev)
}

// dropLocked releases a holder's address unless some LoadBalancer still uses it.
func (r *LoadBalancerReconciler) dropLocked(who string) (netip.Addr, bool) {
	for _, h := range r.members {
		if h == who {
			return netip.Addr{}, false
		}
	}
	return r.space.Release(who, r.now())
}

// forget releases what the LoadBalancer (or ProxyFleet) known as lbOwner
// holds, by the allocator's own record: it works for an object that is
// already gone, even one deleted without its finalizer. A global name's
// address stays while another member uses it. The quarantine is persisted
// before it returns.
func (r *LoadBalancerReconciler) forget(ctx context.Context, lbOwner string) error {
	r.mu.Lock()
	// A LoadBalancer being deleted still has its address in status: the
	// rebuild reserves it, so it is released (into quarantine) here.
	if err := r.spaceLocked(ctx); err != nil {
		r.mu.Unlock()
		return err
	}
	who, ok := r.members[lbOwner]
	if !ok {
		who = lbOwner
	}
	delete(r.members, lbOwner)
	addr, had := r.dropLocked(who)
	r.mu.Unlock()
	if !had {
		return nil
	}
	return r.released(ctx, addr)
}

// released persists the quarantine of addr's pools and wakes the
// LoadBalancers that may now get it: those that asked for addr and found it
// held, and those refused for an exhausted pool that contains it.
func (r *LoadBalancerReconciler) released(ctx context.Context, addr netip.Addr) error {
	if err := r.persistQuarantine(ctx, addr); err != nil {
		return err
	}
	for _, lb := range r.waiting(ctx, v1.ReasonPoolExhausted, v1.ReasonAddressInUse) {
		if !r.canUse(ctx, &lb, addr) {
			continue
		}
		select {
		case r.retry <- event.TypedGenericEvent[*v1.LoadBalancer]{Object: &lb}:
		default: // full: those waiting are retried on their next change
		}
	}
	return nil
}

// persistQuarantine writes the quarantine of every pool that contains addr
// into that pool's annotation (only when it changed).
func (r *LoadBalancerReconciler) persistQuarantine(ctx context.Context, addr netip.Addr) error {
	if r.Quarantine <= 0 {
		return nil
	}
	// One writer at a time, each writing what the allocator holds when it
	// writes: the last write is the newest state.
	r.persistMu.Lock()
	defer r.persistMu.Unlock()
	var pools v1.AddressPoolList
	if err := r.Client.List(ctx, &pools); err != nil {
		return err
	}
	for i := range pools.Items {
		ap := &pools.Items[i]
		r.mu.Lock()
		p, err := r.poolLocked(ctx, ap)
		var entries []quarantined
		if err == nil && p.ranges != nil && p.ranges.Contains(addr) {
			for _, q := range r.space.Quarantined(p.ranges, r.now()) {
				entries = append(entries, quarantined{Address: q.Addr.String(), Group: q.Group, Until: q.Until.UTC()})
			}
		}
		r.mu.Unlock()
		if err != nil {
			return err
		}
		if p.ranges == nil || !p.ranges.Contains(addr) {
			continue
		}
		want := ""
		if len(entries) > 0 {
			b, err := json.Marshal(entries)
			if err != nil {
				return err
			}
			want = string(b)
		}
		if ap.Annotations[AnnotationQuarantine] == want {
			continue
		}
		patch := client.MergeFrom(ap.DeepCopy())
		if want == "" {
			delete(ap.Annotations, AnnotationQuarantine)
		} else {
			if ap.Annotations == nil {
				ap.Annotations = map[string]string{}
			}
			ap.Annotations[AnnotationQuarantine] = want
		}
		if err := r.Client.Patch(ctx, ap, patch); err != nil {
			return fmt.Errorf("persisting the quarantine of pool %s: %w", ap.Name, err)
		}
	}
	return nil
}
