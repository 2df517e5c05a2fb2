package gateway

import (
	"context"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/ccm/secrets"
)

// GatewayFinalizer holds a Gateway until its LoadBalancer (and so its
// address) is gone from the management cluster.
const GatewayFinalizer = "fleetlb.io/gateway-cleanup"

// AnnotationGateway, on a Gateway's LoadBalancer, is the Gateway it was made
// from (namespace/name), so its status finds its way back.
const AnnotationGateway = "fleetlb.io/gateway"

// GatewayLoadBalancerName is the management LoadBalancer of a Gateway:
// `gateway.<namespace>.<name>` (never a Service's, which has one dot).
func GatewayLoadBalancerName(namespace, name string) string {
	return RouteName("gateway", namespace, name)
}

// listenerConflict says why a listener cannot share its port with an
// earlier listener of the Gateway ("" when it can): another protocol, or
// the same hostname.
func listenerConflict(gw *gwv1.Gateway, i int) (gwv1.ListenerConditionReason, string) {
	l := &gw.Spec.Listeners[i]
	for j := 0; j < i; j++ {
		o := &gw.Spec.Listeners[j]
		if o.Port != l.Port {
			continue
		}
		if ok, _, _ := listenerAccepted(o); !ok {
			continue
		}
		if o.Protocol != l.Protocol {
			return gwv1.ListenerReasonProtocolConflict, fmt.Sprintf("listener %s already serves %s on port %d", o.Name, o.Protocol, o.Port)
		}
		if ptrString(o.Hostname) == ptrString(l.Hostname) {
			return gwv1.ListenerReasonHostnameConflict, fmt.Sprintf("listener %s already serves this hostname on port %d", o.Name, o.Port)
		}
	}
	return "", ""
}

// servedListener reports whether the Gateway's LoadBalancer carries the
// listener: accepted and not in conflict with an earlier one.
func servedListener(gw *gwv1.Gateway, name gwv1.SectionName) bool {
	for i := range gw.Spec.Listeners {
		if gw.Spec.Listeners[i].Name != name {
			continue
		}
		ok, _, _ := listenerAccepted(&gw.Spec.Listeners[i])
		reason, _ := listenerConflict(gw, i)
		return ok && reason == ""
	}
	return false
}

func ptrString[T ~string](p *T) string {
	if p == nil {
		return ""
	}
	return string(*p)
}

// requestedAddress is the address spec.addresses asks for, or why the
// fleet cannot honour the request (reason UnsupportedAddress).
func requestedAddress(gw *gwv1.Gateway) (v1.IPAddress, string) {
	var ip v1.IPAddress
	for _, a := range gw.Spec.Addresses {
		if a.Type != nil && *a.Type != gwv1.IPAddressType {
			return "", fmt.Sprintf("address type %s is not supported (only IPAddress)", *a.Type)
		}
		if a.Value == "" {
			continue // any address: the pool chooses
		}
		addr, err := netip.ParseAddr(a.Value)
		if err != nil {
			return "", fmt.Sprintf("address %q is not an IP address", a.Value)
		}
		if ip != "" && string(ip) != addr.String() {
			return "", "a Gateway gets one address from the fleet; more than one was requested"
		}
		ip = v1.IPAddress(addr.String())
	}
	return ip, ""
}

// desiredLoadBalancer is the Gateway's LoadBalancer: the listeners the fleet
// can serve and the address it asks for.
func (r *gatewayReconciler) desiredLoadBalancer(ctx context.Context, gw *gwv1.Gateway, ip v1.IPAddress) (*v1.LoadBalancer, error) {
	lb := &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{
		Namespace: r.Namespace, Name: GatewayLoadBalancerName(gw.Namespace, gw.Name),
		Labels:      map[string]string{labelSourceKind: string(v1.SourceGateway), labelSourceNamespace: gw.Namespace},
		Annotations: map[string]string{AnnotationGateway: client.ObjectKeyFromObject(gw).String()},
	}, Spec: v1.LoadBalancerSpec{
		Source:         v1.ServiceSource{Kind: v1.SourceGateway, Cluster: r.ClusterName, Namespace: gw.Namespace, Name: gw.Name, UID: string(gw.UID)},
		LoadBalancerIP: ip,
		// The API's default, written out: a spec compared with the stored one
		// must equal it, or every reconcile would write it again.
		SessionAffinity: v1.SessionAffinityNone,
	}}
	for i := range gw.Spec.Listeners {
		l := &gw.Spec.Listeners[i]
		if ok, _, _ := listenerAccepted(l); !ok {
			continue
		}
		if reason, _ := listenerConflict(gw, i); reason != "" {
			continue
		}
		gl := v1.GatewayListener{Name: string(l.Name), Port: v1.PortNumber(l.Port), Protocol: v1.ListenerProtocol(l.Protocol), Hostname: v1.Hostname(ptrString(l.Hostname))}
		if l.Protocol == gwv1.HTTPSProtocolType && l.TLS != nil {
			for _, ref := range l.TLS.CertificateRefs {
				key, ok := certKey(gw, ref)
				if !ok {
					continue
				}
				if ok, err := refPermitted(ctx, r.Tenant, kindGateway, gw.Namespace, kindSecret, key); err != nil {
					return nil, err
				} else if ok {
					gl.CertificateSecrets = append(gl.CertificateSecrets, secrets.CopyName(key.Namespace, key.Name))
				}
			}
		}
		lb.Spec.Listeners = append(lb.Spec.Listeners, gl)
	}
	return lb, nil
}

// ensureLoadBalancer creates or updates the Gateway's LoadBalancer and
// returns it as the management cluster has it (nil while it is replaced or
// refused by the API).
func (r *gatewayReconciler) ensureLoadBalancer(ctx context.Context, gw *gwv1.Gateway, want *v1.LoadBalancer) (*v1.LoadBalancer, error) {
	var existing v1.LoadBalancer
	switch err := r.Mgmt.Get(ctx, client.ObjectKeyFromObject(want), &existing); {
	case apierrors.IsNotFound(err):
		// With the manager's finalizer already on: admission then writes only status.
		want.Finalizers = []string{v1.FinalizerAddressRelease}
		switch err := r.Mgmt.Create(ctx, want); {
		case apierrors.IsAlreadyExists(err):
			return nil, nil // our cache lags; its create event brings the Gateway back
		case apierrors.IsInvalid(err):
			r.Recorder.Eventf(gw, nil, corev1.EventTypeWarning, "InvalidGateway", "SyncLoadBalancer", "the fleet refuses the Gateway: %v", err)
			return nil, nil
		case err != nil:
			return nil, err
		}
		log.FromContext(ctx).V(1).Info("created the Gateway's LoadBalancer", "loadBalancer", want.Name)
		return want, nil
	case err != nil:
		return nil, err
	case existing.Spec.Source.UID != want.Spec.Source.UID:
		// Left over from an earlier Gateway of the same name: replace it.
		if existing.DeletionTimestamp.IsZero() {
			if err := r.Mgmt.Delete(ctx, &existing); client.IgnoreNotFound(err) != nil {
				return nil, err
			}
		}
		return nil, nil
	}
	if equality.Semantic.DeepEqual(existing.Spec, want.Spec) && equality.Semantic.DeepEqual(existing.Labels, want.Labels) &&
		existing.Annotations[AnnotationGateway] == want.Annotations[AnnotationGateway] {
		return &existing, nil
	}
	patch := client.MergeFrom(existing.DeepCopy())
	existing.Spec, existing.Labels = want.Spec, want.Labels
	if existing.Annotations == nil {
		existing.Annotations = map[string]string{}
	}
	existing.Annotations[AnnotationGateway] = want.Annotations[AnnotationGateway]
	if err := r.Mgmt.Patch(ctx, &existing, patch); apierrors.IsInvalid(err) {
		r.Recorder.Eventf(gw, nil, corev1.EventTypeWarning, "InvalidGateway", "SyncLoadBalancer", "the fleet refuses the Gateway: %v", err)
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	return &existing, nil
}

// cleanupGateway deletes the Gateway's LoadBalancer, then its finalizer.
func (r *gatewayReconciler) cleanupGateway(ctx context.Context, gw *gwv1.Gateway) error {
	if !controllerutil.ContainsFinalizer(gw, GatewayFinalizer) {
		return nil
	}
	if err := r.cleanupLoadBalancer(ctx, gw); err != nil || r.loadBalancerLeft(ctx, gw) {
		return err
	}
	controllerutil.RemoveFinalizer(gw, GatewayFinalizer)
	return client.IgnoreNotFound(r.Tenant.Update(ctx, gw))
}

// loadBalancerLeft reports whether the Gateway's LoadBalancer still exists
// (its address not yet released); errors count as "still there".
func (r *gatewayReconciler) loadBalancerLeft(ctx context.Context, gw *gwv1.Gateway) bool {
	var lb v1.LoadBalancer
	err := r.Mgmt.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: GatewayLoadBalancerName(gw.Namespace, gw.Name)}, &lb)
	return !apierrors.IsNotFound(err) && (err != nil || lb.Spec.Source.UID == string(gw.UID))
}

// cleanupLoadBalancer deletes the Gateway's LoadBalancer, if it has one.
func (r *gatewayReconciler) cleanupLoadBalancer(ctx context.Context, gw *gwv1.Gateway) error {
	lb := &v1.LoadBalancer{}
	switch err := r.Mgmt.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: GatewayLoadBalancerName(gw.Namespace, gw.Name)}, lb); {
	case err == nil:
		if lb.DeletionTimestamp.IsZero() && lb.Spec.Source.UID == string(gw.UID) {
			return client.IgnoreNotFound(r.Mgmt.Delete(ctx, lb)) // its deletion event brings the Gateway back
		}
		return nil
	case apierrors.IsNotFound(err):
		return nil
	default:
		return err
	}
}

// addressStatus is the Gateway's addresses and Programmed condition from its
// LoadBalancer: Programmed once every proxy serves its listeners.
func addressStatus(lb *v1.LoadBalancer, requested bool) ([]gwv1.GatewayStatusAddress, bool, string, string) {
	if lb == nil {
		return nil, false, string(gwv1.GatewayReasonPending), "waiting for the fleet"
	}
	var addrs []gwv1.GatewayStatusAddress
	for _, a := range lb.Status.Addresses {
		addrs = append(addrs, gwv1.GatewayStatusAddress{Type: ptrTo(gwv1.IPAddressType), Value: string(a.IP)})
	}
	if c := meta.FindStatusCondition(lb.Status.Conditions, v1.ConditionAccepted); c != nil && c.Status == metav1.ConditionFalse && c.ObservedGeneration == lb.Generation {
		reason := gwv1.GatewayReasonAddressNotAssigned
		if requested && c.Reason == v1.ReasonAddressNotAvailable {
			reason = gwv1.GatewayReasonAddressNotUsable
		}
		return addrs, false, string(reason), c.Message
	}
	if len(addrs) == 0 {
		return nil, false, string(gwv1.GatewayReasonAddressNotAssigned), "waiting for an address from the fleet"
	}
	if c := meta.FindStatusCondition(lb.Status.Conditions, v1.ConditionProgrammed); c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == lb.Generation {
		return addrs, true, string(gwv1.GatewayReasonProgrammed), "served on " + string(lb.Status.Addresses[0].IP)
	}
	return addrs, false, string(gwv1.GatewayReasonPending), "waiting for every proxy of the fleet to serve the listeners"
}

func ptrTo[T any](v T) *T { return &v }
