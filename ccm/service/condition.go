package service

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// ConditionAccepted is the condition the ccm keeps in status.conditions of
// each Service it serves: whether the fleet admitted its load balancer, and
// why not (the reason kubectl get svc -o yaml shows without events). A
// Service of another class never gets it.
const ConditionAccepted = "fleetlb.io/Accepted"

// ReasonInvalidService is the reason of a Service the ccm cannot map onto a
// load balancer (a bad annotation, say); the message says what to fix.
const ReasonInvalidService = "InvalidService"

// acceptedCondition mirrors the management LoadBalancer's Accepted
// condition onto the Service; nil while the manager has not decided on the
// current spec.
func acceptedCondition(svc *corev1.Service, lb *v1.LoadBalancer) *metav1.Condition {
	c := meta.FindStatusCondition(lb.Status.Conditions, v1.ConditionAccepted)
	if c == nil || c.ObservedGeneration != lb.Generation {
		return nil
	}
	return &metav1.Condition{Type: ConditionAccepted, Status: c.Status, Reason: c.Reason, Message: c.Message, ObservedGeneration: svc.Generation}
}

// withCondition is conds with c set (c nil: unchanged); LastTransitionTime
// moves only when the status does.
func withCondition(conds []metav1.Condition, c *metav1.Condition) []metav1.Condition {
	out := append([]metav1.Condition(nil), conds...)
	if c != nil {
		meta.SetStatusCondition(&out, *c)
	}
	return out
}
