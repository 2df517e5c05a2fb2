package snapshot

import (
	"cmp"
	"maps"
	"slices"
	"strings"

	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/envoy/server"
	"github.com/fleetlb/fleetlb/envoy/translate"
)

// ReasonProxyRejected says the fleet's proxies refused the configuration an
// object produced (a NACK that admission did not foresee); the object is left
// out until its spec changes, and every other object is served.
const ReasonProxyRejected = "ProxyRejected"

// NACKSource is the part of envoy/server that reports refusals; without it
// the builder contains nothing (the fleet keeps its last good configuration).
type NACKSource interface {
	OnNACK(func(fleet string, n server.NACK))
	// Version is the content version and generation a fleet is served.
	Version(fleet string) (string, uint64)
}

// containment finds the object behind a NACK. The objects whose current spec
// the fleet has not acknowledged yet are the suspects: one suspect is the
// culprit; several are held back and let in again one at a time, each once
// the fleet acknowledged the previous step, until the one that is refused
// again is found. Everyone else's changes keep flowing meanwhile.
type containment struct {
	nacks    []nackEvent          // refusals not handled yet
	queue    []string             // held-back suspects, oldest first
	trial    string               // the suspect let in last; "" for none
	trialGen uint64               // the generation that first held the trial
	rejected map[string]rejection // culprits, until their spec changes
}

// nackEvent is a refusal and the generation the fleet was served when it came.
type nackEvent struct {
	detail    string
	servedGen uint64
}

type rejection struct {
	objectGeneration int64
	detail           string
}

func (b *Builder) containmentOf(fleet string) *containment {
	c := b.contain[fleet]
	if c == nil {
		c = &containment{rejected: map[string]rejection{}}
		b.contain[fleet] = c
	}
	return c
}

// maxDetail bounds the proxy's message copied into a condition.
const maxDetail = 512

// holdBack drops culprits and held-back suspects from the admitted objects
// and reports why on their served entries.
func (b *Builder) holdBack(fleet string, routes []*admittedRoute, lbs []admittedLB, objects []served) ([]*admittedRoute, []admittedLB) {
	b.mu.Lock()
	c := b.contain[fleet]
	idle := c == nil || len(c.nacks) == 0 && len(c.queue) == 0 && c.trial == "" && len(c.rejected) == 0
	b.mu.Unlock()
	if idle {
		return routes, lbs // nothing was refused: nothing to find or hold back
	}
	acked := b.XDS.AckedGeneration(fleet)
	cands := map[string]client.Object{}
	gens := map[string]int64{}
	names := map[string][]string{} // key → names of the resources the object makes
	for _, a := range routes {
		k := servedKey(a.rt)
		cands[k], gens[k] = a.rt, a.rt.Generation
		for _, be := range a.backends {
			names[k] = append(names[k], be.Name)
		}
		for _, c := range a.certs {
			names[k] = append(names[k], c.Name, translate.HTTPSRouteNameFor(c.Name))
		}
		for _, h := range a.hosts {
			for _, r := range h.routes {
				names[k] = append(names[k], r.Name)
			}
		}
	}
	for _, a := range lbs {
		k := servedKey(a.lb)
		cands[k], gens[k] = a.lb, a.lb.Generation
		for _, s := range a.services {
			names[k] = append(names[k], translate.L4ListenerName(s.Protocol, s.VIP.String(), s.Port), s.Backend)
		}
	}

	b.mu.Lock()
	c = b.containmentOf(fleet)
	for k, r := range c.rejected {
		if g, ok := gens[k]; !ok || g != r.objectGeneration {
			delete(c.rejected, k) // changed or gone: try it again
		}
	}
	c.queue = slices.DeleteFunc(c.queue, func(k string) bool { _, ok := cands[k]; return !ok })
	if _, ok := cands[c.trial]; !ok {
		c.trial, c.trialGen = "", 0
	}
	for _, nack := range c.nacks {
		b.blame(fleet, c, nack, cands, gens, names, acked)
	}
	c.nacks = nil
	// One step at a time, each once the fleet runs everything set so far.
	if c.trial != "" && c.trialGen != 0 && acked >= c.trialGen {
		c.trial, c.trialGen = "", 0 // accepted: it stays in
	}
	if c.trial == "" && len(c.queue) > 0 && acked >= b.gen[fleet] {
		c.trial, c.queue = c.queue[0], c.queue[1:]
	}
	held := map[string]string{}
	for _, k := range c.queue {
		held[k] = ""
	}
	for k, r := range c.rejected {
		held[k] = r.detail
	}
	b.mu.Unlock()

	if len(held) == 0 {
		return routes, lbs
	}
	for i := range objects {
		detail, ok := held[servedKey(objects[i].obj)]
		if !ok || objects[i].reason != "" {
			continue
		}
		if detail == "" {
			objects[i].reason, objects[i].msg = v1.ReasonPending, "held back while fleet "+fleet+" finds which change its proxies refused"
			continue
		}
		if len(detail) > maxDetail {
			detail = detail[:maxDetail] + "..."
		}
		objects[i].reason, objects[i].msg = ReasonProxyRejected, "the proxies of fleet "+fleet+" refused its configuration: "+detail
	}
	routes = slices.DeleteFunc(slices.Clone(routes), func(a *admittedRoute) bool { _, h := held[servedKey(a.rt)]; return h })
	lbs = slices.DeleteFunc(slices.Clone(lbs), func(a admittedLB) bool { _, h := held[servedKey(a.lb)]; return h })
	return routes, lbs
}

// blame finds the object behind one refusal. A resource name in the proxy's
// message (names come from object identity) names it directly; a name of an
// object already held back means the refusal is of an older configuration.
// Otherwise the suspects are the objects whose current spec the fleet has not
// acknowledged: one is the culprit; several are held back and let in one at
// a time. Called with b.mu held.
func (b *Builder) blame(fleet string, c *containment, nack nackEvent, cands map[string]client.Object, gens map[string]int64, names map[string][]string, acked uint64) {
	detail := nack.detail
	mentioned := func(k string) bool {
		return slices.ContainsFunc(names[k], func(n string) bool { return mentions(detail, n) })
	}
	held := append(slices.Clone(c.queue), slices.Collect(maps.Keys(c.rejected))...)
	if slices.ContainsFunc(held, mentioned) {
		return // about a configuration from before it was held back
	}
	for k := range cands {
		if mentioned(k) && k != c.trial {
			c.rejected[k] = rejection{gens[k], detail}
			return
		}
	}
	if c.trial != "" {
		if c.trialGen == 0 || nack.servedGen < c.trialGen {
			return // the trial was not served yet: a refusal of an older configuration
		}
		c.rejected[c.trial] = rejection{gens[c.trial], detail}
		c.trial, c.trialGen = "", 0
		return
	}
	var suspects []string
	for k, s := range b.since[fleet] {
		_, rejected := c.rejected[k]
		if _, ok := cands[k]; ok && s.xdsGeneration > acked && !rejected && !slices.Contains(c.queue, k) {
			suspects = append(suspects, k)
		}
	}
	slices.SortFunc(suspects, func(x, y string) int {
		return cmp.Or(cands[x].GetCreationTimestamp().Compare(cands[y].GetCreationTimestamp().Time), cmp.Compare(x, y))
	})
	// Even a single suspect is held back and tried again on its own: the
	// refusal may be of a configuration older than the one it names.
	if len(suspects) == 0 {
		b.Log.Info("NACK with no changed object to hold back", "fleet", fleet, "detail", detail)
	}
	c.queue = append(c.queue, suspects...)
}

// mentions reports whether text names resource name as a whole word (so
// "a/web/tcp/80" is not found in "aa/web/tcp/80").
func mentions(text, name string) bool {
	word := func(r byte) bool {
		return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '/' || r == '_'
	}
	for i := 0; name != ""; {
		j := strings.Index(text[i:], name)
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(name)
		if (start == 0 || !word(text[start-1])) && (end == len(text) || !word(text[end])) {
			return true
		}
		i = start + 1
	}
	return false
}
