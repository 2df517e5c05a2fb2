package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"

	"github.com/fleetlb/fleetlb/e2e/harness"
	"github.com/fleetlb/fleetlb/hack/observability"
	"github.com/fleetlb/fleetlb/internal/testenv"
)

// scrape reads the metric families a /metrics endpoint serves.
func scrape(url string) (map[string]bool, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("%s: %s\n%s", url, resp.Status, b)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, err
	}
	served := map[string]bool{}
	for name, mf := range families {
		if len(mf.GetMetric()) > 0 {
			served[name] = true
		}
	}
	return served, nil
}

// TestObservabilityMetricsServed: every metric the alerts and the dashboard of
// deploy/observability name is served by a running fleetlb-manager (leader,
// a tenant, a LoadBalancer, a proxy). Some series exist only in some states
// (an accepted object waiting for a proxy), so the test scrapes before the
// proxy connects and after it took the configuration.
func TestObservabilityMetricsServed(t *testing.T) {
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	exprs, err := observability.Expressions(root)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{} // metric → where it is used
	for _, e := range exprs {
		names, err := observability.MetricNames(e.Query)
		if err != nil {
			t.Fatalf("%s: %v", e.Where, err)
		}
		for _, n := range names {
			want[observability.BaseName(n)] = append(want[observability.BaseName(n)], e.Where)
		}
	}

	h := newHarness(t)
	port := check(harness.FreePort())(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	f := check(h.StartFleetWith(harness.FleetOptions{LeaderElect: true, MetricsAddress: fmt.Sprintf("127.0.0.1:%d", port)}, "127.0.97.1-127.0.97.8"))(t)
	a := check(f.AddTenant("obs"))(t)
	if err := a.AddNode("obs-1", "127.0.9.1", "z1"); err != nil {
		t.Fatal(err)
	}
	if err := a.Env.Client.Create(context.Background(), loadBalancerService("web", corev1.ServicePort{Port: 8080, Protocol: corev1.ProtocolTCP})); err != nil {
		t.Fatal(err)
	}
	served := map[string]bool{}
	// No proxy yet: the LoadBalancer is accepted and waits (NoProxiesConnected).
	eventually(t, "an accepted LoadBalancer waiting for a proxy, in the metrics", 60*time.Second, func() error {
		s, err := scrape(url)
		if err != nil {
			return err
		}
		for n := range s {
			served[n] = true
		}
		if !s["fleetlb_objects_not_programmed_since_timestamp_seconds"] {
			return fmt.Errorf("not served yet")
		}
		return nil
	})
	check(f.StartProxy(true))(t)
	waitAddress(t, a, "web")
	eventually(t, "every metric the alerts and the dashboard name", 60*time.Second, func() error {
		s, err := scrape(url)
		if err != nil {
			return err
		}
		for n := range s {
			served[n] = true
		}
		var missing []string
		for n, where := range want {
			if !served[n] {
				missing = append(missing, fmt.Sprintf("%s (%s)", n, strings.Join(slices.Compact(where), "; ")))
			}
		}
		if len(missing) > 0 {
			slices.Sort(missing)
			return fmt.Errorf("not served:\n  %s", strings.Join(missing, "\n  "))
		}
		return nil
	})
	t.Logf("%d metrics named by the alerts and the dashboard, all served", len(want))
}
