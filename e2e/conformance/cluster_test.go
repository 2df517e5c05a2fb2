//go:build conformance

package conformance

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

// The tenant control plane is a kube-apiserver and etcd only: no
// kube-controller-manager, no scheduler, no kubelet. e2e/hollow plays the
// deployment and endpointslice controllers, the kubelet and kube-proxy (the
// harness starts it); this file plays the namespace controller, which the
// suite needs for something that has nothing to do with fleetlb: a deleted
// Namespace stays Terminating for ever without it, and the next test that
// applies the same Namespace cannot create anything in it. We delete the
// namespaced objects the suite uses and finalize the Namespace. The loop ends
// with ctx and polls every 250 ms.

// playNamespaceController finalizes deleted Namespaces after deleting the
// kinds of objects the suite and the ccm create in them.
func playNamespaceController(ctx context.Context, c client.Client, cs kubernetes.Interface, logf func(string, ...any)) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := finalizeNamespaces(ctx, c, cs); err != nil && ctx.Err() == nil {
			logf("fake namespace controller: %v", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func finalizeNamespaces(ctx context.Context, c client.Client, cs kubernetes.Interface) error {
	var nss corev1.NamespaceList
	if err := c.List(ctx, &nss); err != nil {
		return err
	}
	for _, ns := range nss.Items {
		if ns.DeletionTimestamp.IsZero() || len(ns.Spec.Finalizers) == 0 {
			continue
		}
		in := client.InNamespace(ns.Name)
		for _, o := range []client.Object{
			&gwv1.HTTPRoute{}, &gwv1.GRPCRoute{}, &gwv1.Gateway{}, &gwv1beta1.ReferenceGrant{},
			&appsv1.Deployment{}, &corev1.Pod{}, &corev1.Service{}, &discoveryv1.EndpointSlice{}, &corev1.Secret{}, &corev1.ConfigMap{},
			&corev1.ServiceAccount{}, &corev1.Event{},
		} {
			if err := c.DeleteAllOf(ctx, o, in, client.GracePeriodSeconds(0)); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsMethodNotSupported(err) {
				return fmt.Errorf("emptying namespace %s: %w", ns.Name, err)
			}
		}
		ns.Spec.Finalizers = nil
		if _, err := cs.CoreV1().Namespaces().Finalize(ctx, &ns, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("finalizing namespace %s: %w", ns.Name, err)
		}
	}
	return nil
}
