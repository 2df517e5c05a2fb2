package tenant

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/manager/hostpattern"
)

// hostnamesCondition is HostnamesValid: False with PublicSuffix, naming the
// patterns, while spec.hostnames holds public suffix patterns (they allow
// nothing, so the tenant learns it here and not only from each refused
// Route), with a warning event when that changes. It does not touch Ready:
// the other patterns work.
func (r *Reconciler) hostnamesCondition(t *v1.Tenant) metav1.Condition {
	bad := hostpattern.PublicSuffixes(t.Spec.Hostnames)
	if len(bad) == 0 {
		return metav1.Condition{
			Type: v1.ConditionHostnamesValid, Status: metav1.ConditionTrue, Reason: v1.ReasonHostnamesValid,
			Message: "every pattern of spec.hostnames can be claimed", ObservedGeneration: t.Generation,
		}
	}
	quoted := make([]string, len(bad))
	for i, p := range bad {
		quoted[i] = fmt.Sprintf("%q", p)
	}
	c := metav1.Condition{
		Type: v1.ConditionHostnamesValid, Status: metav1.ConditionFalse, Reason: v1.ReasonPublicSuffix,
		Message: fmt.Sprintf("spec.hostnames %s: a public suffix or a wildcard directly under one allows no hostname (it would cover every domain registered under it); name your own domains, for example *.team.example.com",
			strings.Join(quoted, ", ")),
		ObservedGeneration: t.Generation,
	}
	if prev := meta.FindStatusCondition(t.Status.Conditions, c.Type); prev == nil || prev.Reason != c.Reason || prev.Message != c.Message {
		r.Recorder.Eventf(t, nil, corev1.EventTypeWarning, c.Reason, "Validate", "%s", c.Message)
	}
	return c
}
