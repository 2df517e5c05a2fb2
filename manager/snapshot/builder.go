// Package snapshot builds each fleet's traffic model from the admitted API
// objects, translates it, and hands it to the xDS server. It marks an object
// Programmed only after every connected proxy of its fleet acknowledged a
// configuration that contains the object's current generation.
package snapshot

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"

	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/envoy/translate"
	"github.com/fleetlb/fleetlb/internal/model"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// XDS is the part of envoy/server the builder uses.
type XDS interface {
	Set(fleet string, resources map[resource.Type][]cachetypes.Resource) uint64
	OnAcked(func(fleet string, generation uint64))
	AckedGeneration(fleet string) uint64
}

// Builder reconciles one fleet at a time (the request name is the fleet).
type Builder struct {
	Client client.Client
	XDS    XDS
	Log    logr.Logger
	// WriteStatus reports whether this replica writes Programmed conditions.
	// Every replica builds and serves snapshots (they are a pure function of
	// API state); only the leader writes status. Nil means always.
	WriteStatus func() bool

	mu    sync.Mutex
	last  map[string]*model.Fleet                             // fleet → model last handed to the server
	gen   map[string]uint64                                   // fleet → its generation
	since map[string]map[types.NamespacedName]programmedSince // fleet → object → generation that first served its current spec
	acks  chan event.GenericEvent
}

type programmedSince struct {
	objectGeneration int64
	xdsGeneration    uint64
}

// SetupWithManager registers the builder.
func (b *Builder) SetupWithManager(mgr ctrl.Manager) error {
	b.last, b.gen, b.since = map[string]*model.Fleet{}, map[string]uint64{}, map[string]map[types.NamespacedName]programmedSince{}
	b.acks = make(chan event.GenericEvent, 256)
	b.XDS.OnAcked(func(fleet string, _ uint64) {
		select {
		case b.acks <- event.GenericEvent{Object: &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: fleet}}}:
		default: // a reconcile of this fleet is already queued behind a full buffer
		}
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("snapshot").
		WithOptions(controller.Options{NeedLeaderElection: ptr.To(false)}).
		Watches(&v1.LoadBalancer{}, handler.EnqueueRequestsFromMapFunc(b.fleetOfNamespace)).
		Watches(&v1.TenantNodes{}, handler.EnqueueRequestsFromMapFunc(b.fleetOfNamespace)).
		Watches(&v1.Tenant{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: fleetName(o.(*v1.Tenant))}}}
		})).
		WatchesRawSource(source.Channel(b.acks, &handler.EnqueueRequestForObject{})).
		Complete(b)
}

func fleetName(t *v1.Tenant) string { return cmp.Or(t.Spec.Fleet, v1.DefaultFleetName) }

func (b *Builder) fleetOfNamespace(ctx context.Context, o client.Object) []reconcile.Request {
	name, ok := strings.CutPrefix(o.GetNamespace(), tenant.NamespacePrefix)
	if !ok {
		return nil
	}
	var t v1.Tenant
	if err := b.Client.Get(ctx, types.NamespacedName{Name: name}, &t); err != nil {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: fleetName(&t)}}}
}

// admittedLB is one LoadBalancer and the model parts made from it.
type admittedLB struct {
	lb       *v1.LoadBalancer
	services []model.L4Service
	backends []model.Backend
}

// Reconcile implements reconcile.Reconciler.
func (b *Builder) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	fleet := req.Name
	var tenants v1.TenantList
	if err := b.Client.List(ctx, &tenants); err != nil {
		return ctrl.Result{}, err
	}
	f := &model.Fleet{Name: fleet}
	var included, excluded []admittedLB
	var reasons []string
	for i := range tenants.Items {
		t := &tenants.Items[i]
		if fleetName(t) != fleet || !t.DeletionTimestamp.IsZero() {
			continue
		}
		ns := tenant.Namespace(t.Name)
		var nodes v1.TenantNodes
		_ = b.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: v1.TenantNodesName}, &nodes) // none yet: no endpoints
		var lbs v1.LoadBalancerList
		if err := b.Client.List(ctx, &lbs, client.InNamespace(ns)); err != nil {
			return ctrl.Result{}, err
		}
		for j := range lbs.Items {
			lb := &lbs.Items[j]
			if !lb.DeletionTimestamp.IsZero() || !meta.IsStatusConditionTrue(lb.Status.Conditions, v1.ConditionAccepted) || len(lb.Status.Addresses) == 0 {
				continue
			}
			a, err := fromLoadBalancer(t.Name, lb, &nodes)
			if err == nil {
				// Each object must translate on its own, so one bad object never stalls the fleet.
				_, err = translate.Translate(&model.Fleet{Name: fleet, L4: a.services, Backends: a.backends})
			}
			if err != nil {
				excluded = append(excluded, a)
				reasons = append(reasons, err.Error())
				continue
			}
			included = append(included, a)
			f.L4 = append(f.L4, a.services...)
			f.Backends = append(f.Backends, a.backends...)
		}
	}
	slices.SortFunc(f.L4, func(x, y model.L4Service) int { return cmp.Compare(x.Backend, y.Backend) })
	slices.SortFunc(f.Backends, func(x, y model.Backend) int { return cmp.Compare(x.Name, y.Name) })

	b.mu.Lock()
	gen, same := b.gen[fleet], reflect.DeepEqual(b.last[fleet], f)
	b.mu.Unlock()
	if !same {
		out, err := translate.Translate(f)
		if err != nil {
			// Objects were checked one by one, so this is a conflict between them.
			return ctrl.Result{}, fmt.Errorf("fleet %s: %w", fleet, err)
		}
		gen = b.XDS.Set(fleet, out.ByType())
		b.mu.Lock()
		b.last[fleet], b.gen[fleet] = f, gen
		b.mu.Unlock()
	}

	acked := b.XDS.AckedGeneration(fleet)
	b.mu.Lock()
	prev, next := b.since[fleet], map[types.NamespacedName]programmedSince{}
	for _, a := range included {
		key := client.ObjectKeyFromObject(a.lb)
		s, ok := prev[key]
		if !ok || s.objectGeneration != a.lb.Generation {
			s = programmedSince{objectGeneration: a.lb.Generation, xdsGeneration: gen}
		}
		next[key] = s
	}
	b.since[fleet] = next // objects no longer served are forgotten
	b.mu.Unlock()
	for _, a := range included {
		s := next[client.ObjectKeyFromObject(a.lb)]
		cond := metav1.Condition{Type: v1.ConditionProgrammed, Status: metav1.ConditionFalse, Reason: v1.ReasonPending,
			Message: "waiting for every proxy of fleet " + fleet + " to acknowledge the configuration", ObservedGeneration: a.lb.Generation}
		if acked >= s.xdsGeneration {
			cond.Status, cond.Reason, cond.Message = metav1.ConditionTrue, v1.ReasonProgrammed, "served by fleet "+fleet
		}
		if err := b.setProgrammed(ctx, a.lb, cond); err != nil {
			return ctrl.Result{}, err
		}
	}
	for i, a := range excluded {
		cond := metav1.Condition{Type: v1.ConditionProgrammed, Status: metav1.ConditionFalse, Reason: v1.ReasonInvalidSpec,
			Message: reasons[i], ObservedGeneration: a.lb.Generation}
		if err := b.setProgrammed(ctx, a.lb, cond); err != nil {
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{}, nil
}

func (b *Builder) setProgrammed(ctx context.Context, lb *v1.LoadBalancer, c metav1.Condition) error {
	if b.WriteStatus != nil && !b.WriteStatus() {
		return nil
	}
	status := lb.Status.DeepCopy()
	meta.SetStatusCondition(&status.Conditions, c)
	if equality.Semantic.DeepEqual(&lb.Status, status) {
		return nil
	}
	patch := client.MergeFrom(lb.DeepCopy())
	lb.Status = *status
	return client.IgnoreNotFound(b.Client.Status().Patch(ctx, lb, patch))
}

// BackendName is the stable, readable Envoy cluster name of one LoadBalancer port.
func BackendName(tenantName string, src v1.ServiceSource, p v1.LoadBalancerPort) string {
	return fmt.Sprintf("%s/%s/%s/%s/%d", tenantName, src.Namespace, src.Name, strings.ToLower(string(p.Protocol)), p.Port)
}

// fromLoadBalancer maps an admitted LoadBalancer onto model services and backends.
func fromLoadBalancer(tenantName string, lb *v1.LoadBalancer, nodes *v1.TenantNodes) (admittedLB, error) {
	a := admittedLB{lb: lb}
	vip, err := netip.ParseAddr(string(lb.Status.Addresses[0].IP))
	if err != nil {
		return a, fmt.Errorf("address %q: %w", lb.Status.Addresses[0].IP, err)
	}
	var ranges []netip.Prefix
	for _, r := range lb.Spec.SourceRanges {
		p, err := netip.ParsePrefix(string(r))
		if err != nil {
			return a, fmt.Errorf("sourceRanges: %w", err)
		}
		ranges = append(ranges, p)
	}
	cluster := cmp.Or(nodes.Spec.Cluster, lb.Spec.Source.Cluster)
	for _, p := range lb.Spec.Ports {
		name := BackendName(tenantName, lb.Spec.Source, p)
		proto, bproto := model.TCP, model.BackendTCP
		if p.Protocol == v1.ProtocolUDP {
			proto, bproto = model.UDP, model.BackendUDP
		}
		byZone := map[string][]model.Endpoint{}
		for _, n := range nodes.Spec.Nodes {
			for _, addr := range n.Addresses {
				if ip, err := netip.ParseAddr(string(addr)); err == nil {
					byZone[n.Zone] = append(byZone[n.Zone], model.Endpoint{Address: ip, Port: uint16(p.NodePort)})
				}
			}
		}
		be := model.Backend{Name: name, Protocol: bproto, SessionAffinity: lb.Spec.SessionAffinity == v1.SessionAffinityClientIP}
		for _, zone := range slices.Sorted(mapKeys(byZone)) {
			be.Groups = append(be.Groups, model.EndpointGroup{Cluster: cluster, Zone: zone, Endpoints: byZone[zone]})
		}
		switch lb.Spec.ProxyProtocol {
		case v1.ProxyProtocolV1:
			be.ProxyProtocol = 1
		case v1.ProxyProtocolV2:
			be.ProxyProtocol = 2
		}
		if proto == model.TCP {
			hc := &model.HealthCheck{Type: model.HealthTCP}
			if h := lb.Spec.HealthCheck; h != nil {
				if h.Type == v1.HealthCheckHTTP {
					hc.Type, hc.Path = model.HealthHTTP, h.Path
				}
				if h.NodePort != nil {
					hc.Port = uint16(*h.NodePort)
				}
				for _, s := range h.ExpectedStatuses {
					hc.ExpectedStatuses = append(hc.ExpectedStatuses, int(s))
				}
				if h.Interval != nil {
					hc.Interval = model.Duration(h.Interval.Duration)
				}
				if h.Timeout != nil {
					hc.Timeout = model.Duration(h.Timeout.Duration)
				}
				if h.UnhealthyThreshold != nil {
					hc.UnhealthyThreshold = uint32(*h.UnhealthyThreshold)
				}
				if h.HealthyThreshold != nil {
					hc.HealthyThreshold = uint32(*h.HealthyThreshold)
				}
			}
			be.HealthCheck = hc
		}
		a.backends = append(a.backends, be)
		a.services = append(a.services, model.L4Service{
			Ref: model.Ref{Tenant: tenantName, Namespace: lb.Spec.Source.Namespace, Name: lb.Spec.Source.Name},
			VIP: vip, Port: uint16(p.Port), Protocol: proto, Backend: name, SourceRanges: ranges,
		})
	}
	return a, nil
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
