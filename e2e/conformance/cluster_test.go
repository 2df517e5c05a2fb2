//go:build conformance

package conformance

import (
	"context"
	"errors"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

// The tenant control plane is a kube-apiserver and etcd only: no
// kube-controller-manager, no scheduler, no kubelet. The conformance suite
// assumes a whole cluster in two places that have nothing to do with
// fleetlb, and this file plays those parts, as e2e/harness plays kube-proxy:
//
//   - kubelet, for readiness only: kubernetes.NamespacesMustBeReady (the
//     suite's Setup and some tests) requires at least one Ready Pod per
//     conformance namespace. For every Deployment we create one Pod object
//     and mark it Ready. No container runs and nothing routes to it.
//   - the namespace controller: a deleted Namespace stays Terminating for
//     ever without it, and the next test that applies the same Namespace
//     cannot create anything in it. We delete the namespaced objects the
//     suite uses and finalize the Namespace.
//
// Both loops end with ctx and poll every 250 ms.

// playKubelet keeps one Ready Pod object per Deployment.
func playKubelet(ctx context.Context, c client.Client, logf func(string, ...any)) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := fakeReadyPods(ctx, c); err != nil && ctx.Err() == nil {
			logf("fake kubelet: %v", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func fakeReadyPods(ctx context.Context, c client.Client) error {
	var deps appsv1.DeploymentList
	if err := c.List(ctx, &deps); err != nil {
		return err
	}
	var errs []error
	for _, d := range deps.Items {
		if !d.DeletionTimestamp.IsZero() {
			continue
		}
		name := d.Name + "-fake"
		var p corev1.Pod
		err := c.Get(ctx, client.ObjectKey{Namespace: d.Namespace, Name: name}, &p)
		if err == nil && podReady(&p) {
			continue
		}
		if apierrors.IsNotFound(err) {
			// The ServiceAccount admission plugin wants the "default"
			// ServiceAccount (the serviceaccount controller's job).
			sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: d.Namespace, Name: "default"}}
			if err := c.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
				errs = append(errs, err)
				continue
			}
			p = corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: d.Namespace, Name: name, Labels: d.Spec.Template.Labels,
					Annotations: map[string]string{"fleetlb.io/conformance": "fake Pod: no container runs (no kubelet in the tenant control plane)"}},
				Spec: corev1.PodSpec{AutomountServiceAccountToken: new(bool),
					Containers: []corev1.Container{{Name: "fake", Image: "registry.k8s.io/pause:3.10"}}},
			}
			if err := c.Create(ctx, &p); err != nil {
				errs = append(errs, err)
				continue
			}
		} else if err != nil {
			errs = append(errs, err)
			continue
		}
		now := metav1.Now()
		p.Status.Phase = corev1.PodRunning
		p.Status.Conditions = []corev1.PodCondition{
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		}
		if err := c.Status().Update(ctx, &p); err != nil && !apierrors.IsConflict(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

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
			&appsv1.Deployment{}, &corev1.Pod{}, &corev1.Service{}, &corev1.Secret{}, &corev1.ConfigMap{},
			&corev1.ServiceAccount{}, &corev1.Event{},
		} {
			if err := c.DeleteAllOf(ctx, o, in); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsMethodNotSupported(err) {
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
