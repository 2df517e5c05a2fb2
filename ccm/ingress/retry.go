package ingress

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// Annotations on an Ingress that replace the fleet's default retry policy
// (connect-failure, refused-stream, reset and 503, idempotent methods only,
// 2 retries) for all its paths.
const (
	// AnnotationRetryAttempts: retries after the first try, 0-5; 0 disables retries.
	AnnotationRetryAttempts = "fleetlb.io/retry-attempts"
	// AnnotationRetryOn: comma-separated Envoy retry_on conditions (connect-failure,
	// refused-stream, reset, reset-before-request, 5xx, gateway-error,
	// retriable-status-codes) and status codes 400-599, which imply
	// retriable-status-codes.
	AnnotationRetryOn = "fleetlb.io/retry-on"
	// AnnotationRetryPerTryTimeout bounds each try, 1ms-1h ("250ms", "2s").
	AnnotationRetryPerTryTimeout = "fleetlb.io/retry-per-try-timeout"
)

// retryAttemptsDefault is the attempts of an override that names no count:
// the default policy's.
const retryAttemptsDefault = 2

var retryOnValues = []v1.RetryOn{v1.RetryOnConnectFailure, v1.RetryOnRefusedStream, v1.RetryOnReset,
	v1.RetryOnResetBeforeRequest, v1.RetryOn5xx, v1.RetryOnGatewayError, v1.RetryOnRetriableStatusCodes}

// retryFrom reads the retry annotations: nil when none is set; on a bad
// value an error, and nil, so the default policy stays.
func retryFrom(ann map[string]string) (*v1.RouteRetry, error) {
	attempts, hasAttempts := ann[AnnotationRetryAttempts]
	on, hasOn := ann[AnnotationRetryOn]
	perTry, hasPerTry := ann[AnnotationRetryPerTryTimeout]
	if !hasAttempts && !hasOn && !hasPerTry {
		return nil, nil
	}
	r := &v1.RouteRetry{Attempts: retryAttemptsDefault}
	if hasAttempts {
		n, err := strconv.Atoi(strings.TrimSpace(attempts))
		if err != nil || n < 0 || n > 5 {
			return nil, fmt.Errorf("annotation %s: %q is not a number from 0 to 5", AnnotationRetryAttempts, attempts)
		}
		r.Attempts = int32(n)
	}
	if hasOn {
		for tok := range strings.SplitSeq(on, ",") {
			tok = strings.TrimSpace(tok)
			if tok == "" {
				continue
			}
			if code, err := strconv.Atoi(tok); err == nil {
				if code < 400 || code > 599 {
					return nil, fmt.Errorf("annotation %s: status %d is not 400-599", AnnotationRetryOn, code)
				}
				if c := v1.RetryStatusCode(code); !slices.Contains(r.StatusCodes, c) {
					r.StatusCodes = append(r.StatusCodes, c)
				}
				continue
			}
			c := v1.RetryOn(tok)
			if !slices.Contains(retryOnValues, c) {
				return nil, fmt.Errorf("annotation %s: %q is not one of connect-failure, refused-stream, reset, reset-before-request, 5xx, gateway-error, retriable-status-codes or a status code", AnnotationRetryOn, tok)
			}
			if !slices.Contains(r.RetryOn, c) {
				r.RetryOn = append(r.RetryOn, c)
			}
		}
		if len(r.StatusCodes) > 0 && len(r.RetryOn) > 0 && !slices.Contains(r.RetryOn, v1.RetryOnRetriableStatusCodes) {
			r.RetryOn = append(r.RetryOn, v1.RetryOnRetriableStatusCodes)
		}
	}
	if hasPerTry {
		d, err := time.ParseDuration(strings.TrimSpace(perTry))
		if err != nil || d < time.Millisecond || d > time.Hour {
			return nil, fmt.Errorf("annotation %s: %q is not a duration from 1ms to 1h", AnnotationRetryPerTryTimeout, perTry)
		}
		r.PerTryTimeout = &metav1.Duration{Duration: d}
	}
	return r, nil
}
