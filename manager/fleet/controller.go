// Package fleet runs the Envoy fleets: for every ProxyFleet it keeps a
// ServiceAccount, a ConfigMap with the Envoy bootstrap, the Secret with the
// fleet's xDS client certificate (renewed before it expires), a Deployment of
// envoyproxy/envoy and a Service for the shared HTTP/HTTPS listeners in the
// manager's namespace, drift-corrected, and reports the fleet's state (ready
// replicas, connected proxies, acknowledged configuration version) in status.
//
// Objects are written with server-side apply, and only when the object in the
// cache differs from the desired one in a field this controller sets, so an
// unchanged object is never rewritten.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/envoy/server"
	"github.com/fleetlb/fleetlb/manager/xdscerts"
)

// FieldOwner is the server-side apply field manager of the fleet's objects.
const FieldOwner = "fleetlb-manager-fleet"

// XDS is what the fleet controller reads from the xDS server
// (envoy/server.Server satisfies it).
type XDS interface {
	// ConnectedProxies counts the proxies of a fleet with an open stream.
	ConnectedProxies(fleet string) int
	// Version is the content version of the snapshot a fleet is served, and its generation.
	Version(fleet string) (string, uint64)
	// AckedGeneration is the newest generation every connected proxy of the fleet acknowledged.
	AckedGeneration(fleet string) uint64
	// OnAcked registers a callback for each advance of a fleet's acknowledged generation.
	OnAcked(func(fleet string, generation uint64))
}

// ProxyNotifier is implemented by an xDS server that reports proxies
// connecting and disconnecting. Without it the controller refreshes the
// connected-proxy count every Options.Resync.
type ProxyNotifier interface {
	OnProxiesChanged(func(fleet string))
}

// ClientCertificates issues the fleets' xDS client certificates
// (manager/xdscerts.Authority satisfies it).
type ClientCertificates interface {
	// ClientSecretData is the Secret data (tls.crt, tls.key, ca.crt) of a
	// fleet: have while it still holds a valid certificate for the fleet
	// from the current CA, else a new one; and when to renew it.
	ClientSecretData(fleet string, have map[string][]byte) (map[string][]byte, time.Time, error)
	// Ready reports whether the CA is loaded.
	Ready() bool
	// OnCAChanged registers a callback for a CA being loaded or replaced.
	OnCAChanged(func())
}

// Options configure the fleet controller.
type Options struct {
	// Namespace holds every fleet's ServiceAccount, ConfigMap, Deployment and Service.
	Namespace string
	// XDSAddress (host:port) is where Envoy reaches the manager's xDS server.
	XDSAddress string
	// Delta makes Envoy use incremental xDS.
	Delta bool
	// Resync refreshes connectedProxies when the xDS server is not a
	// ProxyNotifier (default 30s).
	Resync time.Duration
}

// Reconciler keeps each ProxyFleet's Kubernetes objects and status.
type Reconciler struct {
	Client   client.Client
	Recorder recorder.EventRecorder
	// XDS reports connected proxies and acknowledged versions; nil reports none.
	XDS XDS
	// Certificates issues each fleet's xDS client certificate; nil runs the
	// fleets' xDS in plaintext (the manager's --xds-insecure).
	Certificates ClientCertificates
	Options      Options

	queue    atomic.Pointer[workqueue.TypedRateLimitingInterface[reconcile.Request]]
	refusals refusals
	// bootstraps holds each fleet's bootstrap files by fleet name: they
	// depend on the name and Options only, and the fleet reconciles on every
	// served snapshot and ACK (rendering them was most of such a reconcile).
	bootstraps sync.Map
}

// SetupWithManager registers the controller.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Options.Namespace == "" {
		return errors.New("fleet: a namespace for the fleets' objects is required")
	}
	if r.Options.Resync == 0 {
		r.Options.Resync = 30 * time.Second
	}
	kick := func(fleet string) {
		if q := r.queue.Load(); q != nil {
			(*q).Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: fleet}})
		}
	}
	if r.XDS != nil {
		r.XDS.OnAcked(func(fleet string, _ uint64) { kick(fleet) })
		if n, ok := r.XDS.(ProxyNotifier); ok {
			n.OnProxiesChanged(kick)
		}
		// Every new snapshot and every refusal changes what Programmed says.
		if n, ok := r.XDS.(SnapshotNotifier); ok {
			n.OnServed(kick)
		}
		if n, ok := r.XDS.(NACKNotifier); ok {
			n.OnNACK(func(fleet string, nack server.NACK) {
				_, gen := r.XDS.Version(fleet)
				r.refusals.record(fleet, gen, nack)
				kick(fleet)
			})
		}
	}
	if r.Certificates != nil {
		// A new CA reissues every fleet's client certificate.
		r.Certificates.OnCAChanged(func() {
			for _, req := range r.allFleets(context.Background(), nil) {
				kick(req.Name)
			}
		})
	}
	inNamespace := builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetNamespace() == r.Options.Namespace
	}))
	return ctrl.NewControllerManagedBy(mgr).
		// Its objects follow the spec; its status is written here (per
		// served snapshot and ACK) and by admission (addresses): news
		// to no one here.
		For(&v1.ProxyFleet{}, builder.WithPredicates(predicate.Or[client.Object](predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Owns(&appsv1.Deployment{}, inNamespace).
		Owns(&corev1.Service{}, inNamespace).
		Owns(&corev1.ConfigMap{}, inNamespace).
		Owns(&corev1.ServiceAccount{}, inNamespace).
		Owns(&corev1.Secret{}, inNamespace).
		// The namespace appearing lets fleets waiting for it proceed.
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.allFleets),
			builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetName() == r.Options.Namespace }))).
		// Acknowledgements and proxies coming and going, from the xDS server.
		WatchesRawSource(source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
			r.queue.Store(&q)
			return nil
		})).
		Named("proxyfleet").
		Complete(r)
}

func (r *Reconciler) allFleets(ctx context.Context, _ client.Object) []reconcile.Request {
	var list v1.ProxyFleetList
	if err := r.Client.List(ctx, &list); err != nil {
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: list.Items[i].Name}})
	}
	return reqs
}

// invalidSpec is a fleet the controller cannot run as asked; it is reported, not retried.
type invalidSpec struct {
	reason string
	err    error
}

func (e *invalidSpec) Error() string { return e.err.Error() }

// Reconcile implements reconcile.Reconciler.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var f v1.ProxyFleet
	if err := r.Client.Get(ctx, req.NamespacedName, &f); err != nil {
		if apierrors.IsNotFound(err) {
			r.bootstraps.Delete(req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !f.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // owner references take the objects away
	}
	status := f.Status.DeepCopy()
	status.ObservedGeneration = f.Generation
	// status.addresses belongs to manager/admission (FleetAddressReconciler),
	// which allocates the VIP from the same pools as LoadBalancers.

	dep, renewAt, err := r.ensure(ctx, &f)
	var bad *invalidSpec
	switch {
	case errors.As(err, &bad):
		r.setCondition(&f, status, v1.ConditionReady, metav1.ConditionFalse, bad.reason, bad.Error())
		status.ReadyReplicas = 0
	case err != nil:
		r.setCondition(&f, status, v1.ConditionReady, metav1.ConditionFalse, "SetupFailed", err.Error())
		if serr := r.writeStatus(ctx, &f, status); serr != nil {
			return ctrl.Result{}, errors.Join(err, serr)
		}
		return ctrl.Result{}, err
	case dep == nil:
		status.ReadyReplicas = 0
		r.setCondition(&f, status, v1.ConditionReady, metav1.ConditionTrue, v1.ReasonReady,
			"exposure None: the fleet's proxies run outside this cluster; the bootstrap is in ConfigMap "+r.Options.Namespace+"/"+ObjectName(f.Name))
	default:
		status.ReadyReplicas = dep.Status.ReadyReplicas
		want := *dep.Spec.Replicas
		if dep.Status.ObservedGeneration >= dep.Generation && dep.Status.UpdatedReplicas >= want && dep.Status.ReadyReplicas >= want {
			r.setCondition(&f, status, v1.ConditionReady, metav1.ConditionTrue, v1.ReasonReady,
				fmt.Sprintf("%d of %d Envoy replicas ready", dep.Status.ReadyReplicas, want))
		} else {
			r.setCondition(&f, status, v1.ConditionReady, metav1.ConditionFalse, v1.ReasonPending,
				fmt.Sprintf("%d of %d Envoy replicas ready and updated", min(dep.Status.ReadyReplicas, dep.Status.UpdatedReplicas), want))
		}
	}
	r.proxyStatus(&f, status)
	if err := r.writeStatus(ctx, &f, status); err != nil {
		return ctrl.Result{}, err
	}
	var res ctrl.Result
	if r.XDS != nil {
		if _, ok := r.XDS.(ProxyNotifier); !ok {
			res.RequeueAfter = r.Options.Resync
		}
	}
	// Come back when the client certificate is due for renewal.
	if !renewAt.IsZero() {
		due := max(time.Until(renewAt), time.Second)
		if res.RequeueAfter == 0 || due < res.RequeueAfter {
			res.RequeueAfter = due
		}
	}
	return res, nil
}

// proxyStatus fills connectedProxies, configVersion and Programmed from the xDS server.
func (r *Reconciler) proxyStatus(f *v1.ProxyFleet, status *v1.ProxyFleetStatus) {
	if r.XDS == nil {
		return
	}
	connected := r.XDS.ConnectedProxies(f.Name)
	status.ConnectedProxies = int32(connected)
	version, gen := r.XDS.Version(f.Name)
	acked := r.XDS.AckedGeneration(f.Name)
	// configVersion keeps the last version seen acknowledged by every proxy
	// until the one being served is acknowledged too.
	if gen > 0 && acked >= gen {
		status.ConfigVersion = version
	}
	switch {
	case connected == 0:
		r.setCondition(f, status, v1.ConditionProgrammed, metav1.ConditionFalse, v1.ReasonNoProxies,
			"no proxy of this fleet is connected to this manager")
	case gen == 0:
		r.setCondition(f, status, v1.ConditionProgrammed, metav1.ConditionFalse, v1.ReasonPending,
			fmt.Sprintf("%d proxies connected; no configuration built for this fleet yet", connected))
	case acked >= gen:
		r.setCondition(f, status, v1.ConditionProgrammed, metav1.ConditionTrue, v1.ReasonProgrammed,
			fmt.Sprintf("all %d connected proxies acknowledged version %s", connected, version))
	default:
		if nack, ok := r.refusals.of(f.Name, gen); ok {
			r.setCondition(f, status, v1.ConditionProgrammed, metav1.ConditionFalse, ReasonProxyRejected,
				fmt.Sprintf("version %s is not acknowledged: %s; the proxies keep their last good configuration", version, describe(nack)))
			break
		}
		r.setCondition(f, status, v1.ConditionProgrammed, metav1.ConditionFalse, v1.ReasonPending,
			fmt.Sprintf("waiting for %d connected proxies to acknowledge version %s", connected, version))
	}
}

// bootstrap is the fleet's bootstrap files, rendered once per fleet.
func (r *Reconciler) bootstrap(f *v1.ProxyFleet) (map[string][]byte, error) {
	if v, ok := r.bootstraps.Load(f.Name); ok {
		return maps.Clone(v.(map[string][]byte)), nil
	}
	files, err := bootstrapFiles(f, r.Options, r.Certificates != nil)
	if err != nil {
		return nil, err
	}
	r.bootstraps.Store(f.Name, files)
	return maps.Clone(files), nil
}

// setCondition sets a condition and emits an event when a False condition's reason or message changes.
func (r *Reconciler) setCondition(f *v1.ProxyFleet, status *v1.ProxyFleetStatus, typ string, s metav1.ConditionStatus, reason, msg string) {
	prev := meta.FindStatusCondition(status.Conditions, typ)
	if s == metav1.ConditionFalse && (typ == v1.ConditionReady && reason != v1.ReasonPending || reason == ReasonProxyRejected) &&
		(prev == nil || prev.Reason != reason || prev.Message != msg) {
		r.Recorder.Eventf(f, nil, corev1.EventTypeWarning, reason, "Deploy", "%s", msg)
	}
	meta.SetStatusCondition(&status.Conditions, metav1.Condition{
		Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: f.Generation,
	})
}

// writeStatus patches status only when it changed.
func (r *Reconciler) writeStatus(ctx context.Context, f *v1.ProxyFleet, status *v1.ProxyFleetStatus) error {
	if equality.Semantic.DeepEqual(&f.Status, status) {
		return nil
	}
	patch := client.MergeFrom(f.DeepCopy())
	f.Status = *status
	return r.Client.Status().Patch(ctx, f, patch)
}

// ensure brings the fleet's objects to what its spec asks for and returns the
// Deployment as the cache has it (nil when the fleet has none) and when the
// fleet's client certificate is due for renewal (zero without one).
func (r *Reconciler) ensure(ctx context.Context, f *v1.ProxyFleet) (*appsv1.Deployment, time.Time, error) {
	var renewAt time.Time
	ns := r.Options.Namespace
	if err := checkName(f.Name); err != nil {
		return nil, renewAt, &invalidSpec{reason: v1.ReasonInvalidSpec, err: err}
	}
	http, https := listenerPorts(f)
	for _, p := range []int32{http, https} {
		if p == HealthPort {
			return nil, renewAt, &invalidSpec{reason: v1.ReasonInvalidSpec, err: fmt.Errorf("listener port %d is Envoy's readiness port", p)}
		}
	}
	if http == https {
		return nil, renewAt, &invalidSpec{reason: v1.ReasonPortConflict, err: fmt.Errorf("the HTTP and HTTPS listeners both use port %d", http)}
	}
	var nsObj corev1.Namespace
	if err := r.Client.Get(ctx, types.NamespacedName{Name: ns}, &nsObj); apierrors.IsNotFound(err) {
		return nil, renewAt, &invalidSpec{reason: "NamespaceNotFound", err: fmt.Errorf("namespace %s for the fleet's objects does not exist", ns)}
	} else if err != nil {
		return nil, renewAt, err
	}
	secure := r.Certificates != nil
	files, err := r.bootstrap(f)
	if err != nil {
		return nil, renewAt, &invalidSpec{reason: v1.ReasonInvalidSpec, err: fmt.Errorf("envoy bootstrap: %w", err)}
	}

	exp := exposure(f)
	if err := r.apply(ctx, configMap(f, ns, files), &corev1.ConfigMap{}); err != nil {
		return nil, renewAt, err
	}
	// The client certificate exists whatever the exposure: proxies that run
	// outside the cluster (exposure None) are given it by their operator.
	if secure {
		if renewAt, err = r.ensureClientSecret(ctx, f); err != nil {
			return nil, renewAt, err
		}
	} else if err := r.deleteOwnedNamed(ctx, f, &corev1.Secret{}, xdscerts.ClientSecretName(f.Name)); err != nil {
		return nil, renewAt, err
	}
	if exp == v1.ExposureNone {
		for _, o := range []client.Object{&appsv1.Deployment{}, &corev1.Service{}, &corev1.ServiceAccount{}} {
			if err := r.deleteOwned(ctx, f, o); err != nil {
				return nil, renewAt, err
			}
		}
		return nil, renewAt, nil
	}
	if err := r.apply(ctx, serviceAccount(f, ns), &corev1.ServiceAccount{}); err != nil {
		return nil, renewAt, err
	}
	dep := &appsv1.Deployment{}
	if err := r.apply(ctx, deployment(f, ns, files, secure), dep); err != nil {
		return nil, renewAt, err
	}
	if err := r.apply(ctx, service(f, ns), &corev1.Service{}); err != nil {
		return nil, renewAt, err
	}
	return dep, renewAt, nil
}

// ensureClientSecret keeps the fleet's xDS client certificate Secret: the
// one in the cache while it is valid and not due, else a new one. Until the
// CA is loaded nothing is written (OnCAChanged brings the fleet back).
func (r *Reconciler) ensureClientSecret(ctx context.Context, f *v1.ProxyFleet) (time.Time, error) {
	if !r.Certificates.Ready() {
		return time.Time{}, nil
	}
	var have corev1.Secret
	key := types.NamespacedName{Namespace: r.Options.Namespace, Name: xdscerts.ClientSecretName(f.Name)}
	if err := r.Client.Get(ctx, key, &have); err != nil && !apierrors.IsNotFound(err) {
		return time.Time{}, err
	} else if err == nil {
		if c := metav1.GetControllerOf(&have); c == nil || c.UID != f.UID {
			have.Data = nil // not this fleet's: never reuse a key someone else wrote
		}
	}
	data, renewAt, err := r.Certificates.ClientSecretData(f.Name, have.Data)
	if err != nil {
		return time.Time{}, fmt.Errorf("xDS client certificate: %w", err)
	}
	if err := r.apply(ctx, clientSecret(f, r.Options.Namespace, data), &corev1.Secret{}); err != nil {
		return time.Time{}, err
	}
	return renewAt, nil
}

// apply writes desired with server-side apply unless the cached object
// (read into current) already has every field desired sets. current is left
// holding the object as last read or as returned by the apply.
func (r *Reconciler) apply(ctx context.Context, desired, current client.Object) error {
	want, err := runtime.DefaultUnstructuredConverter.ToUnstructured(desired)
	if err != nil {
		return err
	}
	delete(want, "status")
	unstructured.RemoveNestedField(want, "metadata", "creationTimestamp")
	if err := r.Client.Get(ctx, client.ObjectKeyFromObject(desired), current); err == nil {
		have, err := runtime.DefaultUnstructuredConverter.ToUnstructured(current)
		if err != nil {
			return err
		}
		if contains(have, want) {
			return nil
		}
		log.FromContext(ctx).Info("correcting object", "kind", desired.GetObjectKind().GroupVersionKind().Kind, "name", desired.GetName())
	} else if !apierrors.IsNotFound(err) {
		return err
	}
	u := &unstructured.Unstructured{Object: want}
	if err := r.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return fmt.Errorf("applying %s %s: %w", desired.GetObjectKind().GroupVersionKind().Kind, desired.GetName(), err)
	}
	return runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, current)
}

// deleteOwned removes the fleet's object of obj's kind if this fleet controls it.
func (r *Reconciler) deleteOwned(ctx context.Context, f *v1.ProxyFleet, obj client.Object) error {
	return r.deleteOwnedNamed(ctx, f, obj, ObjectName(f.Name))
}

func (r *Reconciler) deleteOwnedNamed(ctx context.Context, f *v1.ProxyFleet, obj client.Object, name string) error {
	if err := r.Client.Get(ctx, types.NamespacedName{Namespace: r.Options.Namespace, Name: name}, obj); err != nil {
		return client.IgnoreNotFound(err)
	}
	if c := metav1.GetControllerOf(obj); c == nil || c.UID != f.UID {
		return nil
	}
	return client.IgnoreNotFound(r.Client.Delete(ctx, obj, client.Preconditions{UID: ptr.To(obj.GetUID())}))
}

// contains reports whether have has every field of want with the same value
// (maps by key, lists element by element and of the same length). Fields the
// API server defaults or other managers add are ignored; an empty value in
// want matches a missing one.
func contains(have, want any) bool {
	switch w := want.(type) {
	case map[string]any:
		h, ok := have.(map[string]any)
		if !ok {
			return have == nil && len(w) == 0
		}
		for k, wv := range w {
			hv, ok := h[k]
			if !ok {
				if empty(wv) {
					continue
				}
				return false
			}
			if !contains(hv, wv) {
				return false
			}
		}
		return true
	case []any:
		h, ok := have.([]any)
		if !ok {
			return have == nil && len(w) == 0
		}
		if len(h) != len(w) {
			return false
		}
		for i := range w {
			if !contains(h[i], w[i]) {
				return false
			}
		}
		return true
	default:
		return reflect.DeepEqual(have, want)
	}
}

func empty(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case map[string]any:
		return len(x) == 0
	case []any:
		return len(x) == 0
	case string:
		return x == ""
	}
	return false
}
