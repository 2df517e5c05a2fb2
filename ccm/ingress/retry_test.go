package ingress

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

func TestRetryAnnotationsParse(t *testing.T) {
	for name, c := range map[string]struct {
		ann     map[string]string
		want    *v1.RouteRetry
		wantErr string
	}{
		"none":         {map[string]string{"other": "x"}, nil, ""},
		"disabled":     {map[string]string{AnnotationRetryAttempts: "0"}, &v1.RouteRetry{Attempts: 0}, ""},
		"only timeout": {map[string]string{AnnotationRetryPerTryTimeout: "250ms"}, &v1.RouteRetry{Attempts: 2, PerTryTimeout: &metav1.Duration{Duration: 250 * time.Millisecond}}, ""},
		"conditions and codes": {map[string]string{AnnotationRetryAttempts: "3", AnnotationRetryOn: " 5xx, 429 ,connect-failure,429"},
			&v1.RouteRetry{Attempts: 3, RetryOn: []v1.RetryOn{v1.RetryOn5xx, v1.RetryOnConnectFailure, v1.RetryOnRetriableStatusCodes}, StatusCodes: []v1.RetryStatusCode{429}}, ""},
		"codes only keep the default conditions": {map[string]string{AnnotationRetryOn: "502,504"},
			&v1.RouteRetry{Attempts: 2, StatusCodes: []v1.RetryStatusCode{502, 504}}, ""},
		"six attempts":      {map[string]string{AnnotationRetryAttempts: "6"}, nil, `fleetlb.io/retry-attempts: "6" is not a number from 0 to 5`},
		"unknown condition": {map[string]string{AnnotationRetryOn: "5xx,4xx"}, nil, `fleetlb.io/retry-on: "4xx" is not one of`},
		"status 200":        {map[string]string{AnnotationRetryOn: "200"}, nil, "status 200 is not 400-599"},
		"two hours":         {map[string]string{AnnotationRetryPerTryTimeout: "2h"}, nil, `fleetlb.io/retry-per-try-timeout: "2h" is not a duration from 1ms to 1h`},
		"no unit":           {map[string]string{AnnotationRetryPerTryTimeout: "5"}, nil, "is not a duration"},
	} {
		got, err := retryFrom(c.ann)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) || got != nil {
				t.Errorf("%s: %+v, %v; want nil and an error with %q", name, got, err, c.wantErr)
			}
			continue
		}
		if err != nil || !equality.Semantic.DeepEqual(got, c.want) {
			t.Errorf("%s: %+v, %v; want %+v", name, got, err, c.want)
		}
	}
}

// The retry annotations reach every rule of the Ingress's Route; a bad
// value is a warning event on the Ingress and its Route keeps the default
// policy (no override).
func TestRetryAnnotations(t *testing.T) {
	ns := testNamespace(t)
	ingress := func(name string, ann map[string]string) *networkingv1.Ingress {
		return &networkingv1.Ingress{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: ann},
			Spec: networkingv1.IngressSpec{
				IngressClassName: ptr.To(DefaultClass),
				Rules: []networkingv1.IngressRule{rule(name+".example.com",
					path("/pay", networkingv1.PathTypePrefix, backend("web", 8080)),
					path("/", networkingv1.PathTypePrefix, backend("web", 8080)))},
			},
		}
	}
	create(t, nodePortService(ns, "web"),
		ingress("tuned", map[string]string{AnnotationRetryAttempts: "0", AnnotationRetryOn: "5xx,502", AnnotationRetryPerTryTimeout: "2s"}),
		ingress("bad", map[string]string{AnnotationRetryAttempts: "many"}))

	routeRetries := func(name string, want *v1.RouteRetry) {
		t.Helper()
		eventually(t, fmt.Sprintf("Route of %s with retry %+v on every rule", name, want), func() error {
			rt, err := getRoute(RouteName(ns, name))
			if err != nil {
				return err
			}
			if len(rt.Spec.Rules) != 2 {
				return fmt.Errorf("%d rules, want 2", len(rt.Spec.Rules))
			}
			for i, r := range rt.Spec.Rules {
				if !equality.Semantic.DeepEqual(r.Retry, want) {
					return fmt.Errorf("rule %d: retry %+v", i, r.Retry)
				}
			}
			return nil
		})
	}
	routeRetries("tuned", &v1.RouteRetry{Attempts: 0, PerTryTimeout: &metav1.Duration{Duration: 2 * time.Second},
		RetryOn: []v1.RetryOn{v1.RetryOn5xx, v1.RetryOnRetriableStatusCodes}, StatusCodes: []v1.RetryStatusCode{502}})
	routeRetries("bad", nil)
	eventually(t, "the bad value is reported", findEvent(ns, "bad", corev1.EventTypeWarning, "InvalidIngress",
		`annotation fleetlb.io/retry-attempts: "many" is not a number from 0 to 5; the default retry policy applies`))
}
