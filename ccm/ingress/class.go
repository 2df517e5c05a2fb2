package ingress

import (
	"context"
	"fmt"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/fleetlb/fleetlb/ccm/secrets"
)

const (
	// DefaultClass is the IngressClass the ccm serves and creates.
	DefaultClass = "fleetlb"
	// ControllerName is spec.controller of our IngressClass.
	ControllerName = "fleetlb.io/ingress-controller"
	// Finalizer holds an Ingress until its Routes are gone from the management cluster.
	Finalizer = "fleetlb.io/ingress-cleanup"
	// AnnotationLegacyClass is the pre-IngressClass way to pick a controller.
	AnnotationLegacyClass = "kubernetes.io/ingress.class"
)

// Served reports whether the ccm serves ing (or still has to clean up after it):
// it names class by spec.ingressClassName or, when that is unset, by the legacy
// annotation, or it still carries our finalizer.
func Served(ing *networkingv1.Ingress, class string) bool {
	return controllerutil.ContainsFinalizer(ing, Finalizer) || (ing.DeletionTimestamp.IsZero() && ours(ing, class))
}

func ours(ing *networkingv1.Ingress, class string) bool {
	if ing.Spec.IngressClassName != nil {
		return *ing.Spec.IngressClassName == class
	}
	return ing.Annotations[AnnotationLegacyClass] == class
}

// SecretRefs are the TLS Secrets a served Ingress references.
func SecretRefs(ing *networkingv1.Ingress, class string) []types.NamespacedName {
	if !Served(ing, class) {
		return nil
	}
	var out []types.NamespacedName
	seen := map[string]bool{}
	for _, t := range ing.Spec.TLS {
		if t.SecretName != "" && !seen[t.SecretName] {
			seen[t.SecretName] = true
			out = append(out, types.NamespacedName{Namespace: ing.Namespace, Name: t.SecretName})
		}
	}
	return out
}

// SecretReferrer makes the secrets controller copy the TLS Secrets of served Ingresses.
func SecretReferrer(class string) secrets.Referrer {
	if class == "" {
		class = DefaultClass
	}
	return secrets.Referrer{
		Object: &networkingv1.Ingress{},
		List:   &networkingv1.IngressList{},
		Refs:   func(o client.Object) []types.NamespacedName { return SecretRefs(o.(*networkingv1.Ingress), class) },
	}
}

// ServiceRefs are the backend Services a served Ingress references.
func ServiceRefs(ing *networkingv1.Ingress, class string) []types.NamespacedName {
	if !Served(ing, class) {
		return nil
	}
	var out []types.NamespacedName
	seen := map[string]bool{}
	add := func(b *networkingv1.IngressBackend) {
		if b != nil && b.Service != nil && !seen[b.Service.Name] {
			seen[b.Service.Name] = true
			out = append(out, types.NamespacedName{Namespace: ing.Namespace, Name: b.Service.Name})
		}
	}
	add(ing.Spec.DefaultBackend)
	for _, rule := range ing.Spec.Rules {
		if rule.HTTP == nil {
			continue
		}
		for i := range rule.HTTP.Paths {
			add(&rule.HTTP.Paths[i].Backend)
		}
	}
	return out
}

// EnsureClass returns a runnable that creates the IngressClass when it is
// missing. An existing class of that name is left alone (an administrator may
// have set parameters or the default-class annotation); one that belongs to
// another controller is logged, because its Ingresses would be served twice.
func EnsureClass(c client.Client, class string) manager.Runnable {
	if class == "" {
		class = DefaultClass
	}
	return manager.RunnableFunc(func(ctx context.Context) error {
		logger := log.FromContext(ctx).WithValues("ingressClass", class)
		want := &networkingv1.IngressClass{ObjectMeta: metav1.ObjectMeta{Name: class}, Spec: networkingv1.IngressClassSpec{Controller: ControllerName}}
		// A few bounded attempts: the apiserver may still be starting with the ccm.
		backoff := wait.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Steps: 8, Cap: 10 * time.Second}
		var last error
		err := wait.ExponentialBackoffWithContext(ctx, backoff, func(ctx context.Context) (bool, error) {
			var existing networkingv1.IngressClass
			switch last = c.Get(ctx, client.ObjectKey{Name: class}, &existing); {
			case last == nil:
				if existing.Spec.Controller != ControllerName {
					logger.Error(nil, "the IngressClass belongs to another controller; Ingresses of this class are served by both", "controller", existing.Spec.Controller)
				}
				return true, nil
			case !apierrors.IsNotFound(last):
				return false, nil
			}
			if last = c.Create(ctx, want.DeepCopy()); last == nil || apierrors.IsAlreadyExists(last) {
				logger.Info("created the IngressClass")
				return true, nil
			}
			return false, nil
		})
		if err != nil && ctx.Err() == nil {
			// Not fatal: Ingresses naming the class are served whether it exists or not.
			logger.Error(fmt.Errorf("%w (last error: %v)", err, last), "could not create the IngressClass")
		}
		return nil
	})
}
