package snapshot

import (
	"context"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/model"
)

// maxChangedParts is how many changed parts are applied one by one; more
// make the fleet's state again from all parts.
var maxChangedParts = 1024

// reconcileChanges is a reconcile of the parts that changed since the last
// one (fleetState): what they assembled into is changed by them, translated
// (the translator reuses what did not change), and only the objects whose
// Programmed condition can have changed are looked at: those read again,
// those whose check changed, and those waiting for an xDS generation the
// proxies have now acknowledged. A reconcile where nothing changed but the
// acknowledged generation costs the objects that were waiting for it.
// done is false when the fleet needs the full path (a conflict between
// objects, objects held back after a NACK).
func (b *Builder) reconcileChanges(ctx context.Context, fleet string, httpL, httpsL *model.SharedListener, noL7 string, nss []string, cur map[string]*tenantParts) (res ctrl.Result, done bool, err error) {
	b.mu.Lock()
	c := b.contain[fleet]
	idle := c == nil || len(c.nacks) == 0 && len(c.queue) == 0 && c.trial == "" && len(c.rejected) == 0
	b.mu.Unlock()
	if !idle {
		b.Log.V(1).Info("snapshot: full path", "fleet", fleet, "why", "containment")
		return ctrl.Result{}, false, nil // holdBack needs every object
	}
	st := b.stateOf(fleet)
	why := "" // why the fleet's state is made again from every part
	switch {
	case !st.valid:
		why = "not valid"
	case !slices.Equal(st.nss, nss):
		why = "tenants"
	case !sameListener(st.httpL, httpL) || !sameListener(st.httpsL, httpsL) || st.noL7 != noL7:
		why = "listeners"
	}
	rebuild := why != ""
	for {
		var ch change
		if rebuild {
			st.reset()
			st.nss, st.httpL, st.httpsL, st.noL7 = nss, httpL, httpsL, noL7
			for _, ns := range nss {
				diffTenant(&ch, nil, cur[ns], true)
			}
		} else {
			for _, ns := range nss {
				diffTenant(&ch, st.parts[ns], cur[ns], false)
			}
			if len(ch.lbsGone)+len(ch.lbsCome)+len(ch.routesGone)+len(ch.routesCome) > maxChangedParts {
				// Many changed (a deny-list or listener change remakes every part):
				// made from scratch, sorted once, rather than one insertion at a time.
				rebuild, why = true, "many changed"
				continue
			}
		}
		st.valid = false // until it holds what the parts make
		st.parts = cur
		a := newAssembler(st, fleet)
		a.bulk = rebuild
		// Gateways first: Routes on their listeners are checked next to them.
		for _, p := range ch.lbsGone {
			a.gatewayGone(p)
		}
		for _, p := range ch.lbsCome {
			a.gatewayCome(p)
		}
		for _, p := range ch.routesGone {
			a.routeGone(p)
		}
		for _, p := range ch.routesCome {
			a.routeCome(p)
		}
		gwChanged := a.gatewayRoutes()
		if rebuild {
			st.withL7 = st.okRoutes > 0
		} else if st.withL7 != (st.okRoutes > 0) {
			// LoadBalancers are checked next to the shared listeners now, or no longer.
			rebuild, why = true, "routes served flipped"
			continue
		}
		lbErrs := make([]error, len(ch.lbsCome))
		for _, p := range ch.lbsGone {
			a.lbGone(p)
		}
		for i, p := range ch.lbsCome {
			lbErrs[i] = a.lbCome(p)
		}
		a.finish()
		if a.dup {
			st.fellBack = true
			b.Log.V(1).Info("snapshot: full path", "fleet", fleet, "why", "two objects make one name")
			return ctrl.Result{}, false, nil // two objects make one name: a conflict
		}
		return b.served(ctx, fleet, st, &ch, lbErrs, gwChanged, rebuild, why)
	}
}

// served translates what st holds, hands it to the server, and decides the
// Programmed conditions that can have changed.
func (b *Builder) served(ctx context.Context, fleet string, st *fleetState, ch *change, lbErrs []error, gwChanged []*routePart, rebuild bool, why string) (ctrl.Result, bool, error) {
	start := time.Now()
	tr := b.translator(fleet)
	modelChanged := rebuild || st.fleet == nil || len(ch.lbsGone)+len(ch.lbsCome)+len(ch.routesGone)+len(ch.routesCome)+len(gwChanged) > 0
	var out = tr.Last()
	changed := false
	if modelChanged || out == nil {
		f := st.model(fleet)
		var err error
		if out, changed, err = tr.Translate(f); err != nil {
			st.fellBack = true
			return ctrl.Result{}, false, nil // a conflict between objects: the full path finds it
		}
		st.fleet = f
	}
	st.valid = true
	path := "changes"
	if rebuild {
		b.paths.rebuilt++
		path = "rebuilt"
	} else {
		b.paths.changes++
	}
	snapshotReconciles.WithLabelValues(path).Inc()

	b.mu.Lock()
	gen, set := b.gen[fleet]
	b.mu.Unlock()
	if changed || !set {
		gen = b.XDS.Set(fleet, out.ByType())
		b.mu.Lock()
		b.gen[fleet], b.last[fleet] = gen, st.fleet
		b.mu.Unlock()
	}
	acked := b.XDS.AckedGeneration(fleet)
	if b.Replicas != nil {
		var err error
		if acked, err = b.Replicas.Acked(ctx, fleet, acked); err != nil {
			st.statusStale = true
			return ctrl.Result{}, true, err
		}
	}

	// What each object's condition is decided from, for the objects that changed.
	var cands []string
	for _, p := range ch.lbsGone {
		delete(st.objs, p.skey)
		cands = append(cands, p.skey)
	}
	for _, p := range ch.routesGone {
		delete(st.objs, p.skey)
		cands = append(cands, p.skey)
	}
	for i, p := range ch.lbsCome {
		reason, msg := "", ""
		if err := lbErrs[i]; err != nil {
			reason, msg = v1.ReasonInvalidSpec, err.Error()
		}
		st.objectOf(p.skey, p.a.lb, true, reason, msg)
		cands = append(cands, p.skey)
	}
	for _, p := range ch.routesCome {
		st.objectOf(p.skey, p.rt, p.a != nil, p.reason, p.msg)
		cands = append(cands, p.skey)
	}
	for _, p := range gwChanged {
		st.objectOf(p.skey, p.rt, true, p.reason, p.msg)
		cands = append(cands, p.skey)
	}
	for i, key := range ch.read {
		if o := st.objs[key]; o != nil {
			o.obj = ch.readObjs[i] // the newest copy, for its status
		}
		cands = append(cands, key)
	}
	// Objects that waited for a generation the proxies now run.
	for g, keys := range st.pending {
		if g <= acked {
			cands = append(cands, keys...)
			delete(st.pending, g)
		}
	}
	if rebuild {
		cands = slices.Collect(mapKeys(st.objs))
		clear(st.pending)
	}
	slices.Sort(cands)
	cands = slices.Compact(cands)

	b.mu.Lock()
	since := b.since[fleet]
	if since == nil || rebuild {
		prev := since
		since = make(map[string]programmedSince, len(st.objs))
		for key, o := range st.objs {
			if o.served && o.reason == "" {
				if s, ok := prev[key]; ok && s.objectGeneration == o.gen {
					since[key] = s
				}
			}
		}
		b.since[fleet] = since
	}
	for _, key := range cands {
		o := st.objs[key]
		if o == nil || !o.served || o.reason != "" {
			delete(since, key) // no longer served: forgotten
			continue
		}
		s, ok := since[key]
		if !ok || s.objectGeneration != o.gen {
			s = programmedSince{objectGeneration: o.gen, xdsGeneration: gen}
			since[key] = s
		}
		if s.xdsGeneration > acked {
			st.pending[s.xdsGeneration] = append(st.pending[s.xdsGeneration], key)
		}
	}
	b.mu.Unlock()
	if b.WriteStatus != nil && !b.WriteStatus() {
		st.statusStale = true // another replica writes status: look at every object once this one does
		return ctrl.Result{}, true, nil
	}
	if st.statusStale || acked < st.acked {
		// Conditions were not all decided last time (a write failed, or
		// another replica wrote them), or the proxies went back: every object.
		cands = slices.Collect(mapKeys(st.objs))
	}
	st.acked, st.statusStale = acked, false
	var writes []programmedWrite
	waiting, programmed := waitingMessage(fleet), "served by fleet "+fleet
	for _, key := range cands {
		o := st.objs[key]
		if o == nil {
			continue
		}
		if !o.served {
			// A Route no longer accepted is no longer programmed either.
			rt := o.obj.(*v1.Route)
			if meta.FindStatusCondition(rt.Status.Conditions, v1.ConditionProgrammed) == nil {
				continue
			}
			cond := metav1.Condition{Type: v1.ConditionProgrammed, Status: metav1.ConditionFalse, Reason: v1.ReasonPending,
				Message: "no hostname of the route is accepted", ObservedGeneration: rt.Generation}
			if b.needsProgrammedWrite(rt, &cond) {
				writes = append(writes, programmedWrite{rt, cond})
			}
			continue
		}
		cond := metav1.Condition{Type: v1.ConditionProgrammed, Status: metav1.ConditionFalse, Reason: o.reason, Message: o.msg, ObservedGeneration: o.gen}
		if o.reason == "" {
			cond.Reason, cond.Message = v1.ReasonPending, waiting
			if acked >= since[key].xdsGeneration {
				cond.Status, cond.Reason, cond.Message = metav1.ConditionTrue, v1.ReasonProgrammed, programmed
			}
		}
		if b.needsProgrammedWrite(o.obj, &cond) {
			writes = append(writes, programmedWrite{o.obj, cond})
		}
	}
	if log := b.Log.V(1); log.Enabled() {
		log.Info("snapshot: reconciled", "fleet", fleet, "path", path, "why", why, "lbsGone", len(ch.lbsGone), "lbsCome", len(ch.lbsCome),
			"routesGone", len(ch.routesGone), "routesCome", len(ch.routesCome), "gatewayRoutes", len(gwChanged), "read", len(ch.read),
			"translated", modelChanged, "changed", changed, "generation", gen, "acked", acked, "looked", len(cands), "writes", len(writes),
			"servedTook", time.Since(start))
	}
	if err := b.writeProgrammed(ctx, fleet, writes); err != nil {
		st.statusStale = true
		return ctrl.Result{}, true, err
	}
	return ctrl.Result{}, true, nil
}
