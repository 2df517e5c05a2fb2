package service

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// serviceCondition waits until the Service carries ConditionAccepted with
// the given status and reason, and returns it.
func serviceCondition(t *testing.T, ns, name string, status metav1.ConditionStatus, reason string) metav1.Condition {
	t.Helper()
	var got metav1.Condition
	eventually(t, fmt.Sprintf("%s/%s condition %s=%s %s", ns, name, ConditionAccepted, status, reason), func() error {
		var svc corev1.Service
		if err := tenantEnv.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &svc); err != nil {
			return err
		}
		c := meta.FindStatusCondition(svc.Status.Conditions, ConditionAccepted)
		if c == nil || c.Status != status || c.Reason != reason || c.ObservedGeneration != svc.Generation {
			return fmt.Errorf("conditions %+v", svc.Status.Conditions)
		}
		got = *c
		return nil
	})
	return got
}

// A refused Service says why in its own status.conditions (kubectl get svc
// -o yaml, no events needed); once admitted the condition turns True; a bad
// annotation is a condition too; a Service of another class gets nothing.
func TestRefusalIsAConditionOnTheService(t *testing.T) {
	ctx := context.Background()
	ns := testNamespace(t)
	svc := lbService(ns, "cond", nil)
	bad := lbService(ns, "cond-bad", func(s *corev1.Service) { s.Annotations = map[string]string{v1.AnnotationProxyProtocol: "v3"} })
	other := lbService(ns, "cond-other", func(s *corev1.Service) { s.Spec.LoadBalancerClass = ptr.To("example.com/other") })
	for _, s := range []*corev1.Service{svc, bad, other} {
		if err := tenantEnv.Client.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	var lb *v1.LoadBalancer
	eventually(t, "management LoadBalancer", func() (err error) { lb, err = getLB(ns, "cond"); return err })
	setAccepted := func(status metav1.ConditionStatus, reason, msg string, addrs ...v1.Address) {
		t.Helper()
		lb.Status.Addresses = addrs
		meta.SetStatusCondition(&lb.Status.Conditions, metav1.Condition{Type: v1.ConditionAccepted, Status: status, Reason: reason,
			Message: msg, ObservedGeneration: lb.Generation})
		if err := mgmtEnv.Client.Status().Update(ctx, lb); err != nil {
			t.Fatal(err)
		}
	}
	setAccepted(metav1.ConditionFalse, v1.ReasonPoolExhausted, "address pool vips has no free address")
	if c := serviceCondition(t, ns, "cond", metav1.ConditionFalse, v1.ReasonPoolExhausted); c.Message != "address pool vips has no free address" {
		t.Errorf("message %q", c.Message)
	}
	setAccepted(metav1.ConditionTrue, v1.ReasonAccepted, "address 127.0.10.30 from pool vips", v1.Address{IP: "127.0.10.30", IPMode: v1.IPModeProxy})
	serviceCondition(t, ns, "cond", metav1.ConditionTrue, v1.ReasonAccepted)

	if c := serviceCondition(t, ns, "cond-bad", metav1.ConditionFalse, ReasonInvalidService); !strings.Contains(c.Message, `"v3" is not v1 or v2`) {
		t.Errorf("bad annotation: message %q", c.Message)
	}
	// The marker Services above were reconciled; the other class's was left alone.
	if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(other), other); err != nil {
		t.Fatal(err)
	}
	if len(other.Status.Conditions) != 0 || len(other.Status.LoadBalancer.Ingress) != 0 {
		t.Errorf("a Service of another class got status %+v", other.Status)
	}

	// Changing the class away removes the condition with the address.
	if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
		t.Fatal(err)
	}
	svc.Spec.Type = corev1.ServiceTypeClusterIP
	svc.Spec.LoadBalancerClass = nil
	if err := tenantEnv.Client.Update(ctx, svc); err != nil {
		t.Fatal(err)
	}
	eventually(t, "condition removed", func() error {
		var s corev1.Service
		if err := tenantEnv.Client.Get(ctx, client.ObjectKeyFromObject(svc), &s); err != nil {
			return err
		}
		if meta.FindStatusCondition(s.Status.Conditions, ConditionAccepted) != nil || len(s.Status.LoadBalancer.Ingress) != 0 {
			return fmt.Errorf("status %+v", s.Status)
		}
		return nil
	})
}
