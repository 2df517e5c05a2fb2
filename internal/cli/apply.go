package cli

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
)

// FieldManager owns the fields the plugin applies (server-side apply).
const FieldManager = "kubectl-fleetlb"

// applier applies objects with server-side apply and says what changed.
type applier struct {
	dyn    dynamic.Interface
	mapper meta.RESTMapper
}

// Outcomes of apply, as kubectl apply prints them.
const (
	created    = "created"
	configured = "configured"
	unchanged  = "unchanged"
)

// apply server-side applies u (forcing ownership of the fields it sets: the
// plugin is the installer of these objects) and reports whether it was
// created, changed or left as it was.
func (a *applier) apply(ctx context.Context, u *unstructured.Unstructured) (string, error) {
	gvk := u.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", gvk.Kind, u.GetName(), err)
	}
	var r dynamic.ResourceInterface = a.dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		if u.GetNamespace() == "" {
			return "", fmt.Errorf("%s %s has no namespace", gvk.Kind, u.GetName())
		}
		r = a.dyn.Resource(m.Resource).Namespace(u.GetNamespace())
	}
	before := ""
	cur, err := r.Get(ctx, u.GetName(), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return "", fmt.Errorf("%s %s: %w", gvk.Kind, objectName(u), err)
	default:
		before = cur.GetResourceVersion()
	}
	after, err := r.Apply(ctx, u.GetName(), u, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", gvk.Kind, objectName(u), err)
	}
	switch after.GetResourceVersion() {
	case before:
		return unchanged, nil
	default:
		if before == "" {
			return created, nil
		}
		return configured, nil
	}
}

func objectName(u *unstructured.Unstructured) string {
	if u.GetNamespace() == "" {
		return u.GetName()
	}
	return u.GetNamespace() + "/" + u.GetName()
}
