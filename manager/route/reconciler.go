// Package route admits tenant Routes (L7): which of a Route's hostnames the
// tenant may serve (its Tenant's hostname patterns, its limits, and
// ownership across tenants: tenants of one group share a hostname; between
// other tenants the oldest of overlapping claims wins, exact or wildcard —
// see claims.go), whether its TLS Secrets and backends are usable, and on
// which addresses the fleet serves it. The outcome is the Route's status:
// acceptedHostnames, addresses and the Accepted and ResolvedRefs conditions.
// One bad hostname, Secret or rule is reported and left out; the rest of the
// Route is served, and no Route ever blocks another. Messages never name
// another tenant or its objects.
//
// Limits (Tenant spec.limits, finite defaults) admit the oldest Routes
// first: up to maxRoutes Routes, maxHostnames distinct hostnames and
// maxRouteConfigBytes of route configuration (ConfigBytes).
//
// Conditions:
//   - Accepted=False: nothing of the Route is served (TenantNotFound,
//     FleetNotFound, LimitExceeded naming the limit, or every hostname
//     refused with HostnameNotAllowed / HostnameConflict / LimitExceeded).
//   - Accepted=True with reason HostnameNotAllowed, HostnameConflict or
//     LimitExceeded: some hostnames are served (status.acceptedHostnames), the
//     others are refused as the message says. Reason InvalidSpec: some rules
//     cannot be served.
//   - ResolvedRefs=False, reason SecretNotFound / SecretNotTLS /
//     InvalidBackend: a TLS Secret is missing or unusable (its hostnames are
//     served over plain HTTP only until it is fixed), or a rule's backends are
//     unusable (that rule is left out; the other rules are served).
package route

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// Field indexes on Routes.
const (
	// IndexHostname indexes Routes by each of spec.hostnames.
	IndexHostname = "fleetlb.io/route-hostname"
	// IndexSecret indexes Routes by each spec.tls[].secretName.
	IndexSecret = "fleetlb.io/route-secret"
	// IndexRefused indexes Routes not wholly accepted (Accepted=False, or
	// True with a reason other than Accepted: some hostname or rule
	// refused) under "true": what a change of the tenant's other Routes may
	// admit is found without listing the namespace.
	IndexRefused = "fleetlb.io/route-refused"
)

// maxMessage keeps condition messages under the API's limit.
const maxMessage = 4096

// Reconciler admits Routes.
type Reconciler struct {
	Client   client.Client
	Recorder recorder.EventRecorder
	Log      logr.Logger
	// ClaimGrace is how long a hostname claim outlives its last Route
	// (DefaultClaimGrace when 0).
	ClaimGrace time.Duration
	// Workers is how many Routes are admitted at once (DefaultWorkers when
	// 0). Each admission decides from the cache alone, and any change that
	// may move another Route's outcome enqueues that Route, so the order in
	// which workers finish does not change the outcome.
	Workers int

	now func() time.Time
	// sizes caches ConfigBytes per Route generation and hostnames.
	sizes sizeCache
	// budgets keeps each tenant's budget until its spec or Routes change.
	budgets budgetCache
	// wake enqueues Routes whose limits outcome another Route's admission moved.
	wake chan event.TypedGenericEvent[*v1.Route]
}

// SetupWithManager registers the indexes and the controller.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	ctx := context.Background()
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &v1.Route{}, IndexHostname, func(o client.Object) []string {
		var out []string
		for _, h := range ClaimedHostnames(o.(*v1.Route)) {
			out = append(out, string(h))
		}
		return out
	}); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &v1.Route{}, IndexDomain, indexRouteDomains); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &v1.Tenant{}, IndexClaim, indexClaims); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &v1.Tenant{}, IndexClaimDomain, indexClaimDomains); err != nil {
		return err
	}
	if r.ClaimGrace <= 0 {
		r.ClaimGrace = DefaultClaimGrace
	}
	if r.now == nil {
		r.now = time.Now
	}
	if err := idx.IndexField(ctx, &v1.Route{}, IndexRefused, indexRefused); err != nil {
		return err
	}
	r.wake = make(chan event.TypedGenericEvent[*v1.Route], 1024)
	if err := idx.IndexField(ctx, &v1.Route{}, IndexSecret, func(o client.Object) []string {
		var out []string
		for _, t := range o.(*v1.Route).Spec.TLS {
			out = append(out, t.SecretName)
		}
		return out
	}); err != nil {
		return err
	}
	// A change of who claims a hostname (a Route created, deleted, its
	// hostnames changed) may change the outcome for every other claimant.
	claimChanged := predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			return e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration() ||
				e.ObjectOld.GetDeletionTimestamp().IsZero() != e.ObjectNew.GetDeletionTimestamp().IsZero()
		},
	}
	// The claim records on each Tenant follow its Routes.
	// Every handler of a change a budget is made from drops the tenant's kept
	// budget before it enqueues anything (budgetCache).
	if err := ctrl.NewControllerManagedBy(mgr).
		Watches(&v1.Tenant{}, r.invalidating(&handler.EnqueueRequestForObject{}), builder.WithPredicates(claimChanged)).
		Watches(&v1.Route{}, r.invalidating(handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			name, ok := tenant.Of(o.GetNamespace())
			if !ok {
				return nil
			}
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: name}}}
		})), builder.WithPredicates(claimChanged)).
		Named("route-claims").
		Complete(reconcile.Func(func(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
			after, err := r.recordClaims(ctx, req.Name)
			return ctrl.Result{RequeueAfter: after}, err
		})); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		// Status writes (ours, the snapshot's Programmed) are no news: each
		// admission reads every Route of the tenant. One handler, so the
		// budget is dropped before any of these is enqueued.
		Watches(&v1.Route{}, r.invalidating(&handler.EnqueueRequestForObject{}, handler.EnqueueRequestsFromMapFunc(r.sharingHostnames),
			// A deleted Route's size is not asked for again.
			handler.Funcs{DeleteFunc: func(_ context.Context, e event.DeleteEvent, _ workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				r.sizes.forget(e.Object.GetUID())
			}}), builder.WithPredicates(claimChanged)).
		// Tenant status (counts) changes with every Route: only its spec and deletion matter.
		Watches(&v1.Tenant{}, r.invalidating(handler.EnqueueRequestsFromMapFunc(r.allRoutes)), builder.WithPredicates(claimChanged)).
		// A claim record added, released or expired may decide other tenants' claims.
		Watches(&v1.Tenant{}, handler.Funcs{UpdateFunc: r.claimRecordsChanged}).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.usingSecret)).
		// ProxyFleet status changes with every acknowledged configuration: only its addresses matter.
		Watches(&v1.ProxyFleet{}, handler.EnqueueRequestsFromMapFunc(r.ofFleet), builder.WithPredicates(AddressesChanged)).
		WatchesRawSource(source.Channel(r.wake, &handler.TypedEnqueueRequestForObject[*v1.Route]{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: cmp.Or(r.Workers, DefaultWorkers)}).
		Named("route-admission").
		Complete(r)
}

// DefaultWorkers is Reconciler.Workers when unset.
const DefaultWorkers = 8

// invalidating is a handler that drops the kept budget of the event's
// tenant (of a Route's namespace, or the Tenant itself), then hands the
// event to each of then, in order.
func (r *Reconciler) invalidating(then ...handler.EventHandler) handler.EventHandler {
	drop := func(o client.Object, deleted bool) {
		switch o.(type) {
		case *v1.Route:
			if name, ok := tenant.Of(o.GetNamespace()); ok {
				r.budgets.invalidate(name)
			}
		case *v1.Tenant:
			if deleted {
				r.budgets.forget(o.GetName())
			} else {
				r.budgets.invalidate(o.GetName())
			}
		}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			drop(e.Object, false)
			for _, h := range then {
				h.Create(ctx, e, q)
			}
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			drop(e.ObjectOld, false)
			drop(e.ObjectNew, false)
			for _, h := range then {
				h.Update(ctx, e, q)
			}
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			drop(e.Object, true)
			for _, h := range then {
				h.Delete(ctx, e, q)
			}
		},
		GenericFunc: func(ctx context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			drop(e.Object, false)
			for _, h := range then {
				h.Generic(ctx, e, q)
			}
		},
	}
}

// AddressesChanged passes ProxyFleet events that may change the fleet's addresses.
var AddressesChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, ok1 := e.ObjectOld.(*v1.ProxyFleet)
		n, ok2 := e.ObjectNew.(*v1.ProxyFleet)
		return !ok1 || !ok2 || o.Generation != n.Generation || !equality.Semantic.DeepEqual(FleetAddresses(o), FleetAddresses(n))
	},
}

// FleetName is the ProxyFleet that serves a tenant.
func FleetName(t *v1.Tenant) string { return cmp.Or(t.Spec.Fleet, v1.DefaultFleetName) }

// Older orders claims: the oldest Route first, then by namespace and name.
func Older(a, b *v1.Route) int {
	return cmp.Or(a.CreationTimestamp.Compare(b.CreationTimestamp.Time), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
}

// refusal is one hostname not served, or one unusable reference.
type refusal struct{ reason, msg string }

// admission is the outcome for one Route.
type admission struct {
	// refused: the whole Route (reason set) — nothing is served.
	refused refusal
	// hostnames served, and those refused.
	accepted   []v1.Hostname
	hostIssues []refusal
	// specIssues: rules left out for InvalidSpec.
	specIssues []refusal
	// refIssues: Secrets and backends that cannot be used.
	refIssues []refusal
	addresses []v1.Address
	ports     []v1.RoutePort // of the fleet's shared listeners; none on Gateways
	// budget is the tenant's limits outcome for all its Routes (nil when
	// the Route has no Tenant).
	budget *budget
	// onGateways: the Route is served on its Gateways' listeners, where its
	// hostnames are filters, not claims.
	onGateways bool
}

// Reconcile implements reconcile.Reconciler.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var rt v1.Route
	if err := r.Client.Get(ctx, req.NamespacedName, &rt); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !rt.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	a, err := r.admit(ctx, &rt)
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := r.writeStatus(ctx, &rt, a); err != nil {
		return ctrl.Result{}, err
	}
	r.wakeOverLimits(ctx, &rt, a.budget)
	return ctrl.Result{}, nil
}

// indexRefused is the IndexRefused value of a Route.
func indexRefused(o client.Object) []string {
	rt, ok := o.(*v1.Route)
	if !ok {
		return nil
	}
	if c := meta.FindStatusCondition(rt.Status.Conditions, v1.ConditionAccepted); c != nil &&
		(c.Status != metav1.ConditionTrue || c.Reason != v1.ReasonAccepted) {
		return []string{"true"}
	}
	return nil
}

// refusedIn lists the Routes of ns that are not wholly accepted (the
// cache's objects, for their names: only read them).
func (r *Reconciler) refusedIn(ctx context.Context, ns string) ([]v1.Route, error) {
	var list v1.RouteList
	err := r.Client.List(ctx, &list, client.InNamespace(ns), client.MatchingFields{IndexRefused: "true"}, client.UnsafeDisableDeepCopy)
	return list.Items, err
}

// wakeOverLimits enqueues the Routes of rt's tenant that its limits now
// refuse (wholly or some hostname) while their status does not say so yet:
// a Route created in the same second with a lower name, or an older one
// that grew, pushes younger ones out. Those the limits now admit again are
// refused ones, which every change in the namespace enqueues
// (sharingHostnames).
func (r *Reconciler) wakeOverLimits(ctx context.Context, rt *v1.Route, b *budget) {
	if b == nil || len(b.refused)+len(b.hostRefused) == 0 {
		return
	}
	refused, err := r.refusedIn(ctx, rt.Namespace)
	if err != nil {
		return
	}
	known := map[string]bool{rt.Name: true}
	for i := range refused {
		known[refused[i].Name] = true
	}
	wake := func(name string) {
		if known[name] {
			return
		}
		known[name] = true
		o := &v1.Route{}
		o.Namespace, o.Name = rt.Namespace, name
		select {
		case r.wake <- event.TypedGenericEvent[*v1.Route]{Object: o}:
		case <-ctx.Done():
		}
	}
	for name := range b.refused {
		wake(name)
	}
	for name := range b.hostRefused {
		wake(name)
	}
}

// claims decides hostname ownership and limits for one reconcile; it caches
// what it read, so deciding several hostnames costs one read each.
type claims struct {
	c       client.Client
	sizes   *sizeCache   // nil: ConfigBytes computed each time
	kept    *budgetCache // nil: budgets made for this reconcile only
	tenants map[string]*v1.Tenant
	budgets map[string]*budget           // tenant name → what its limits admit
	decided map[string]map[claimKey]bool // "*.root" or exact name → winning claims
	now     time.Time
	grace   time.Duration
}

func (r *Reconciler) newClaims(ctx context.Context) (*claims, error) {
	var list v1.TenantList
	// Only read (a Tenant's status holds a record per claimed hostname): no copies.
	if err := r.Client.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	c := &claims{c: r.Client, sizes: &r.sizes, kept: &r.budgets, tenants: map[string]*v1.Tenant{}, budgets: map[string]*budget{},
		decided: map[string]map[claimKey]bool{}, now: r.now(), grace: r.ClaimGrace}
	for i := range list.Items {
		if list.Items[i].DeletionTimestamp.IsZero() {
			c.tenants[list.Items[i].Name] = &list.Items[i]
		}
	}
	return c, nil
}

func (c *claims) tenantOf(rt *v1.Route) *v1.Tenant {
	name, ok := tenant.Of(rt.Namespace)
	if !ok {
		return nil
	}
	return c.tenants[name]
}

func (r *Reconciler) admit(ctx context.Context, rt *v1.Route) (*admission, error) {
	a := &admission{}
	c, err := r.newClaims(ctx)
	if err != nil {
		return nil, err
	}
	t := c.tenantOf(rt)
	if t == nil {
		a.refused = refusal{v1.ReasonTenantNotFound, fmt.Sprintf("namespace %s belongs to no Tenant", rt.Namespace)}
		return a, nil
	}
	b, err := c.budgetOf(ctx, t)
	if err != nil {
		return nil, err
	}
	a.budget = b
	if ref, ok := b.refused[rt.Name]; ok {
		a.refused = ref
		return a, nil
	}
	var fleet v1.ProxyFleet
	if err := r.Client.Get(ctx, types.NamespacedName{Name: FleetName(t)}, &fleet); apierrors.IsNotFound(err) {
		a.refused = refusal{v1.ReasonFleetNotFound, fmt.Sprintf("proxy fleet %q of tenant %s does not exist", FleetName(t), t.Name)}
		return a, nil
	} else if err != nil {
		return nil, err
	}
	a.addresses = FleetAddresses(&fleet)
	a.onGateways = OnGateways(rt)
	if !a.onGateways {
		a.ports = FleetPorts(&fleet, rt)
	}

	for _, h := range ClaimedHostnames(rt) {
		if slices.Contains(a.accepted, h) {
			continue
		}
		if !Allowed(t.Spec.Hostnames, h) {
			msg := fmt.Sprintf("hostname %s is not allowed for tenant %s (allowed: %s)", h, t.Name, joinHosts(t.Spec.Hostnames))
			if p, ok := publicSuffixCover(t.Spec.Hostnames, h); ok {
				msg = fmt.Sprintf("hostname %s is not allowed for tenant %s: its pattern %s is a public suffix or a wildcard directly under one, "+
					"which would claim every domain registered under it, so it allows nothing (list the tenant's own domains in spec.hostnames)", h, t.Name, p)
			}
			a.hostIssues = append(a.hostIssues, refusal{v1.ReasonHostnameNotAllowed, msg})
			continue
		}
		if ref, ok := b.hostRefused[rt.Name][h]; ok {
			a.hostIssues = append(a.hostIssues, ref)
			continue
		}
		if won, err := c.holds(ctx, t, h); err != nil {
			return nil, err
		} else if !won {
			// Never name the holder: it is another tenant.
			a.hostIssues = append(a.hostIssues, refusal{v1.ReasonHostnameConflict,
				fmt.Sprintf("hostname %s is held by another tenant: a claim on it, on a wildcard covering it or on a name under it is older", h)})
			continue
		}
		a.accepted = append(a.accepted, h)
	}

	for _, tl := range rt.Spec.TLS {
		if !slices.ContainsFunc(a.accepted, func(h v1.Hostname) bool { return CoveredBy(tl.Hostnames, h) }) {
			continue // serves no accepted hostname: nothing to resolve
		}
		var s corev1.Secret
		if err := r.Client.Get(ctx, types.NamespacedName{Namespace: rt.Namespace, Name: tl.SecretName}, &s); apierrors.IsNotFound(err) {
			a.refIssues = append(a.refIssues, refusal{v1.ReasonSecretNotFound,
				fmt.Sprintf("secret %s not found in %s; %s served over HTTP only", tl.SecretName, rt.Namespace, joinHosts(tl.Hostnames))})
			continue
		} else if err != nil {
			return nil, err
		}
		if reason, msg := CheckSecret(&s); reason != "" {
			a.refIssues = append(a.refIssues, refusal{reason, fmt.Sprintf("%s; %s served over HTTP only", msg, joinHosts(tl.Hostnames))})
		}
	}
	for i := range rt.Spec.Rules {
		rule := &rt.Spec.Rules[i]
		reason, msg := CheckRuleFor(t, rule)
		switch reason {
		case "":
		case v1.ReasonInvalidBackend:
			outcome := "the rule is not served"
			if a.onGateways {
				outcome = "the rule answers 500" // Gateway API
			}
			a.refIssues = append(a.refIssues, refusal{reason, fmt.Sprintf("%s: %s; %s", RuleName(rule, i), msg, outcome)})
		default:
			a.specIssues = append(a.specIssues, refusal{reason, fmt.Sprintf("%s: %s; the rule is not served", RuleName(rule, i), msg)})
		}
	}
	return a, nil
}

func joinHosts(hs []v1.Hostname) string {
	if len(hs) == 0 {
		return "none"
	}
	s := make([]string, len(hs))
	for i, h := range hs {
		s[i] = string(h)
	}
	return strings.Join(s, ", ")
}

func joinMessages(rs []refusal) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = r.msg
	}
	m := strings.Join(s, "; ")
	if len(m) > maxMessage {
		m = m[:maxMessage-3] + "..."
	}
	return m
}

// conditions are the Accepted and ResolvedRefs conditions of an admission.
func (a *admission) conditions(gen int64) (accepted, resolved metav1.Condition) {
	accepted = metav1.Condition{Type: v1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: v1.ReasonAccepted, ObservedGeneration: gen}
	resolved = metav1.Condition{Type: v1.ConditionResolvedRefs, Status: metav1.ConditionTrue, Reason: v1.ReasonResolvedRefs,
		Message: "every Secret and backend is usable", ObservedGeneration: gen}
	issues := append(slices.Clone(a.hostIssues), a.specIssues...)
	switch {
	case a.refused.reason != "":
		accepted.Status, accepted.Reason, accepted.Message = metav1.ConditionFalse, a.refused.reason, a.refused.msg
	case a.onGateways && len(issues) > 0:
		accepted.Reason, accepted.Message = issues[0].reason, "served on the listeners of its Gateways; "+joinMessages(issues)
	case a.onGateways:
		accepted.Message = "served on the listeners of its Gateways"
	case len(a.accepted) == 0:
		accepted.Status, accepted.Reason, accepted.Message = metav1.ConditionFalse, a.hostIssues[0].reason, joinMessages(a.hostIssues)
	case len(issues) > 0:
		accepted.Reason = issues[0].reason
		accepted.Message = "served for " + joinHosts(a.accepted) + "; " + joinMessages(issues)
	default:
		accepted.Message = "served for " + joinHosts(a.accepted)
	}
	if a.refused.reason == "" && len(a.refIssues) > 0 {
		resolved.Status, resolved.Reason, resolved.Message = metav1.ConditionFalse, a.refIssues[0].reason, joinMessages(a.refIssues)
	}
	return accepted, resolved
}

// writeStatus patches status only when it changed, with an event for every
// new problem.
func (r *Reconciler) writeStatus(ctx context.Context, rt *v1.Route, a *admission) error {
	status := rt.Status.DeepCopy()
	status.ObservedGeneration = rt.Generation
	status.AcceptedHostnames = nil
	status.Addresses, status.Ports = nil, nil
	if a.refused.reason == "" {
		status.AcceptedHostnames = a.accepted
		if len(a.accepted) > 0 {
			status.Addresses = a.addresses
			if len(a.addresses) > 0 {
				status.Ports = a.ports
			}
		}
	}
	accepted, resolved := a.conditions(rt.Generation)
	for _, c := range []metav1.Condition{accepted, resolved} {
		prev := meta.FindStatusCondition(status.Conditions, c.Type)
		if c.Reason != v1.ReasonAccepted && c.Reason != v1.ReasonResolvedRefs && (prev == nil || prev.Reason != c.Reason || prev.Message != c.Message) {
			r.Recorder.Eventf(rt, nil, corev1.EventTypeWarning, c.Reason, "Admit", "%s", c.Message)
		}
		meta.SetStatusCondition(&status.Conditions, c)
	}
	if a.refused.reason != "" {
		meta.RemoveStatusCondition(&status.Conditions, v1.ConditionResolvedRefs)
	}
	if equality.Semantic.DeepEqual(&rt.Status, status) {
		return nil
	}
	r.Log.V(1).Info("route admitted", "route", client.ObjectKeyFromObject(rt), "accepted", a.accepted, "reason", accepted.Reason)
	patch := client.MergeFromWithOptions(rt.DeepCopy(), client.MergeFromWithOptimisticLock{})
	rt.Status = *status
	return r.Client.Status().Patch(ctx, rt, patch)
}

func (r *Reconciler) sharingHostnames(ctx context.Context, o client.Object) []reconcile.Request {
	rt, ok := o.(*v1.Route)
	if !ok {
		return nil
	}
	seen := map[types.NamespacedName]bool{}
	var reqs []reconcile.Request
	// In the Route's own namespace, the refused ones: a Route deleted or
	// shrunk may leave room under the tenant's limits for them. (Those a new
	// or grown Route pushes over the limits are found by its own admission,
	// wakeOverLimits.) Found by index: a create costs no list of the namespace.
	var lists [][]v1.Route
	if items, err := r.refusedIn(ctx, rt.Namespace); err == nil {
		lists = append(lists, items)
	}
	c := &claims{c: r.Client}
	for _, h := range ClaimedHostnames(rt) {
		if items, err := c.related(ctx, h); err == nil {
			lists = append(lists, items)
		}
	}
	for _, items := range lists {
		for i := range items {
			k := client.ObjectKeyFromObject(&items[i])
			if !seen[k] {
				seen[k] = true
				reqs = append(reqs, reconcile.Request{NamespacedName: k})
			}
		}
	}
	return reqs
}

// claimRecordsChanged enqueues the Routes related to every hostname whose
// claim record a Tenant status update added, released or dropped.
func (r *Reconciler) claimRecordsChanged(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	o, ok1 := e.ObjectOld.(*v1.Tenant)
	n, ok2 := e.ObjectNew.(*v1.Tenant)
	if !ok1 || !ok2 {
		return
	}
	changed := map[string]bool{}
	index := func(recs []v1.HostnameClaim) map[string]v1.HostnameClaim {
		m := map[string]v1.HostnameClaim{}
		for _, rec := range recs {
			m[rec.Hostname] = rec
		}
		return m
	}
	om, nm := index(o.Status.HostnameClaims), index(n.Status.HostnameClaims)
	for h, rec := range om {
		if other, ok := nm[h]; !ok || !equality.Semantic.DeepEqual(rec, other) {
			changed[h] = true
		}
	}
	for h := range nm {
		if _, ok := om[h]; !ok {
			changed[h] = true
		}
	}
	c := &claims{c: r.Client}
	for h := range changed {
		items, err := c.related(ctx, v1.Hostname(h))
		if err != nil {
			continue
		}
		for i := range items {
			q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&items[i])})
		}
	}
}

func (r *Reconciler) allRoutes(ctx context.Context, _ client.Object) []reconcile.Request {
	var list v1.RouteList
	if err := r.Client.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return nil
	}
	return requests(list.Items)
}

func (r *Reconciler) usingSecret(ctx context.Context, o client.Object) []reconcile.Request {
	if _, ok := tenant.Of(o.GetNamespace()); !ok {
		return nil
	}
	var list v1.RouteList
	if err := r.Client.List(ctx, &list, client.InNamespace(o.GetNamespace()), client.MatchingFields{IndexSecret: o.GetName()}, client.UnsafeDisableDeepCopy); err != nil {
		return nil
	}
	return requests(list.Items)
}

func (r *Reconciler) ofFleet(ctx context.Context, o client.Object) []reconcile.Request {
	// Names only: no copies.
	var tenants v1.TenantList
	if err := r.Client.List(ctx, &tenants, client.UnsafeDisableDeepCopy); err != nil {
		return nil
	}
	var reqs []reconcile.Request
	for i := range tenants.Items {
		if FleetName(&tenants.Items[i]) != o.GetName() {
			continue
		}
		var list v1.RouteList
		if err := r.Client.List(ctx, &list, client.InNamespace(tenant.Namespace(tenants.Items[i].Name)), client.UnsafeDisableDeepCopy); err != nil {
			continue
		}
		reqs = append(reqs, requests(list.Items)...)
	}
	return reqs
}

func requests(items []v1.Route) []reconcile.Request {
	reqs := make([]reconcile.Request, len(items))
	for i := range items {
		reqs[i] = reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&items[i])}
	}
	return reqs
}
