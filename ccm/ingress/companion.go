package ingress

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"maps"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
)

// LabelCompanionOf marks a companion NodePort Service with the name of the
// ClusterIP Service it exposes to the fleet.
const LabelCompanionOf = "fleetlb.io/companion-of"

// indexBackends is the field index of the Services a served Ingress references.
const indexBackends = "fleetlb.io/backend-services"

// CompanionName is the companion NodePort Service of a ClusterIP Service:
// `<svc>-fleetlb`, shortened with a hash when that is not a DNS label.
func CompanionName(svc string) string {
	const suffix = "-fleetlb"
	if len(svc)+len(suffix) <= 63 {
		return svc + suffix
	}
	sum := sha256.Sum256([]byte(svc))
	return svc[:63-len(suffix)-9] + "-" + hex.EncodeToString(sum[:4]) + suffix
}

// desiredCompanion exposes the ports of svc on node ports: same selector and
// ports, owned by svc.
func desiredCompanion(svc *corev1.Service) *corev1.Service {
	c := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: svc.Namespace, Name: CompanionName(svc.Name),
			Labels: map[string]string{LabelCompanionOf: svc.Name},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID,
			}},
		},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeNodePort,
			Selector: maps.Clone(svc.Spec.Selector),
		},
	}
	for _, p := range svc.Spec.Ports {
		c.Spec.Ports = append(c.Spec.Ports, corev1.ServicePort{
			Name: p.Name, Protocol: p.Protocol, AppProtocol: p.AppProtocol, Port: p.Port, TargetPort: p.TargetPort,
		})
	}
	return c
}

// needsCompanion: the fleet reaches Services through node ports; a Service
// with all its ports on node ports needs no companion, an ExternalName one
// cannot have one.
func needsCompanion(svc *corev1.Service) bool {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return false
	}
	for _, p := range svc.Spec.Ports {
		if p.NodePort == 0 {
			return true
		}
	}
	return false
}

// isCompanionOf reports whether c is the companion we made for svc.
func isCompanionOf(c *corev1.Service, svc string) bool { return c.Labels[LabelCompanionOf] == svc }

// CompanionReconciler keeps the companion of every referenced ClusterIP
// Service equal to its original and deletes companions nothing references.
// Companions are created by the route producers (the Ingress controller) when
// they first need a node port, so their Routes never wait for a second pass.
type CompanionReconciler struct {
	Tenant   client.Client
	Class    string
	Recorder recorder.EventRecorder
	// Referrers are other kinds that use companions (Gateway API routes).
	Referrers []ServiceReferrer
}

// ServiceReferrer is a kind of tenant object whose backends may need companions.
type ServiceReferrer struct {
	Object client.Object
	List   client.ObjectList
	// Refs are the Services obj uses while it is served; it must depend on obj alone.
	Refs func(obj client.Object) []types.NamespacedName
}

// indexCompanionRefs indexes the Services of the extra referrers.
const indexCompanionRefs = "fleetlb.io/companion-refs"

// SetupWithManager registers the controller. The backend index on Ingresses
// must exist: Reconciler.SetupWithManager creates it.
func (r *CompanionReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	if r.Class == "" {
		r.Class = DefaultClass
	}
	b := ctrl.NewControllerManagedBy(mgr)
	for _, ref := range r.Referrers {
		refs := ref.Refs
		if err := mgr.GetFieldIndexer().IndexField(ctx, ref.Object, indexCompanionRefs, func(o client.Object) []string {
			var keys []string
			for _, k := range refs(o) {
				keys = append(keys, k.String())
			}
			return keys
		}); err != nil {
			return err
		}
		b = b.Watches(ref.Object, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			var reqs []reconcile.Request
			for _, k := range refs(o) {
				reqs = append(reqs, reconcile.Request{NamespacedName: k})
			}
			return reqs
		}))
	}
	return b.
		Named("ingress-companions").
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			name := o.GetName()
			if of := o.GetLabels()[LabelCompanionOf]; of != "" {
				name = of
			}
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
		})).
		Watches(&networkingv1.Ingress{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			var reqs []reconcile.Request
			for _, k := range ServiceRefs(o.(*networkingv1.Ingress), r.Class) {
				reqs = append(reqs, reconcile.Request{NamespacedName: k})
			}
			return reqs
		})).
		Complete(r)
}

func (r *CompanionReconciler) referenced(ctx context.Context, key types.NamespacedName) (bool, error) {
	var list networkingv1.IngressList
	if err := r.Tenant.List(ctx, &list, client.InNamespace(key.Namespace), client.MatchingFields{indexBackends: key.String()}); err != nil {
		return false, err
	}
	if len(list.Items) > 0 {
		return true, nil
	}
	for _, ref := range r.Referrers {
		l := ref.List.DeepCopyObject().(client.ObjectList)
		if err := r.Tenant.List(ctx, l, client.MatchingFields{indexCompanionRefs: key.String()}); err != nil {
			return false, err
		}
		if meta.LenList(l) > 0 {
			return true, nil
		}
	}
	return false, nil
}

// Reconcile implements reconcile.Reconciler; the request names an original Service.
func (r *CompanionReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var companion corev1.Service
	switch err := r.Tenant.Get(ctx, types.NamespacedName{Namespace: req.Namespace, Name: CompanionName(req.Name)}, &companion); {
	case apierrors.IsNotFound(err):
		return ctrl.Result{}, nil // made on demand by the route producers
	case err != nil:
		return ctrl.Result{}, err
	}
	if !isCompanionOf(&companion, req.Name) || !companion.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	want, err := r.referenced(ctx, req.NamespacedName)
	if err != nil {
		return ctrl.Result{}, err
	}
	var svc corev1.Service
	switch err := r.Tenant.Get(ctx, req.NamespacedName, &svc); {
	case apierrors.IsNotFound(err):
		want = false
	case err != nil:
		return ctrl.Result{}, err
	default:
		want = want && needsCompanion(&svc)
	}
	if !want {
		if err := r.Tenant.Delete(ctx, &companion); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, err
		}
		log.FromContext(ctx).V(1).Info("deleted companion Service", "companion", companion.Name)
		return ctrl.Result{}, nil
	}
	d := desiredCompanion(&svc)
	// Node ports stay where they are: Routes point at them.
	for i := range d.Spec.Ports {
		for _, p := range companion.Spec.Ports {
			if p.Port == d.Spec.Ports[i].Port && p.Protocol == d.Spec.Ports[i].Protocol {
				d.Spec.Ports[i].NodePort = p.NodePort
			}
		}
	}
	if equality.Semantic.DeepEqual(companion.Spec.Selector, d.Spec.Selector) && portsEqual(companion.Spec.Ports, d.Spec.Ports) &&
		equality.Semantic.DeepEqual(companion.OwnerReferences, d.OwnerReferences) && companion.Spec.Type == corev1.ServiceTypeNodePort {
		return ctrl.Result{}, nil
	}
	patch := client.MergeFrom(companion.DeepCopy())
	companion.Spec.Type, companion.Spec.Selector, companion.Spec.Ports = corev1.ServiceTypeNodePort, d.Spec.Selector, d.Spec.Ports
	companion.OwnerReferences = d.OwnerReferences
	if err := r.Tenant.Patch(ctx, &companion, patch); err != nil {
		r.Recorder.Eventf(&svc, nil, corev1.EventTypeWarning, "CompanionUpdateFailed", "SyncCompanion", "updating the node-port companion %s: %v", companion.Name, err)
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, nil
}

// portsEqual compares what a companion copies of its original's ports.
func portsEqual(have, want []corev1.ServicePort) bool {
	if len(have) != len(want) {
		return false
	}
	for i := range have {
		h, w := have[i], want[i]
		if h.Name != w.Name || h.Protocol != w.Protocol || h.Port != w.Port || h.TargetPort != w.TargetPort ||
			h.NodePort != w.NodePort || !equality.Semantic.DeepEqual(h.AppProtocol, w.AppProtocol) {
			return false
		}
	}
	return true
}
