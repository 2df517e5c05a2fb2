package tenant

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// The ccm token's expiry and due renewal per tenant, so an alert sees a
// rotation that keeps failing before the ccm loses access.
var (
	tokenExpiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fleetlb_tenant_token_expiry_timestamp_seconds",
		Help: "When the token of the tenant's ccm kubeconfig expires (Unix time)."}, []string{"tenant"})
	tokenRenewal = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fleetlb_tenant_token_renewal_timestamp_seconds",
		Help: "When the manager renews the token of the tenant's ccm kubeconfig (Unix time); in the past means the renewal is overdue."}, []string{"tenant"})
)

func init() { metrics.Registry.MustRegister(tokenExpiry, tokenRenewal) }

// observeToken records a tenant's token, renewed a third of ttl before it expires.
func observeToken(tenant string, expires time.Time, ttl time.Duration) {
	tokenExpiry.WithLabelValues(tenant).Set(float64(expires.Unix()))
	tokenRenewal.WithLabelValues(tenant).Set(float64(expires.Add(-ttl / 3).Unix()))
}

// forgetToken drops a deleted tenant's series.
func forgetToken(tenant string) {
	tokenExpiry.DeleteLabelValues(tenant)
	tokenRenewal.DeleteLabelValues(tenant)
}
