package observability

import (
	"testing"
	"text/template"

	"github.com/prometheus/common/model"

	"github.com/fleetlb/fleetlb/internal/testenv"
)

// Every expression of the rules and the dashboard parses with Prometheus's
// PromQL parser and names metrics; every alert has a severity and a summary,
// and its annotations are valid templates. (The e2e test
// TestObservabilityMetricsServed checks a running manager serves every name.)
func TestExpressionsParse(t *testing.T) {
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	exprs, err := Expressions(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(exprs) < 20 {
		t.Fatalf("found %d expressions", len(exprs))
	}
	for _, e := range exprs {
		names, err := MetricNames(e.Query)
		if err != nil {
			t.Errorf("%s: %q: %v", e.Where, e.Query, err)
			continue
		}
		if len(names) == 0 {
			t.Errorf("%s: %q names no metric", e.Where, e.Query)
		}
	}
	if _, err := MetricNames(`sum(rate(fleetlb_xds_nacks_total[5m]) by (fleet)`); err == nil {
		t.Error("an unbalanced expression parsed")
	}
	if _, err := MetricNames(`{fleet="edge"}`); err == nil {
		t.Error("a selector without a metric name was accepted")
	}

	rules, err := Rules(root)
	if err != nil {
		t.Fatal(err)
	}
	// Prometheus's template functions, enough to parse the annotations.
	stub := func(any) string { return "" }
	funcs := template.FuncMap{"humanize": stub, "humanizePercentage": stub, "humanizeDuration": stub}
	seen := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || seen[r.Alert] {
				t.Errorf("group %s: alert name %q is empty or repeated", g.Name, r.Alert)
			}
			seen[r.Alert] = true
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", r.Alert, s)
			}
			if r.Annotations["summary"] == "" {
				t.Errorf("%s has no summary", r.Alert)
			}
			if r.For != "" {
				if _, err := model.ParseDuration(r.For); err != nil {
					t.Errorf("%s: for %q: %v", r.Alert, r.For, err)
				}
			}
			for k, a := range r.Annotations {
				text := "{{ $labels := .Labels }}{{ $value := .Value }}" + a
				if _, err := template.New(k).Funcs(funcs).Parse(text); err != nil {
					t.Errorf("%s: annotation %s: %v", r.Alert, k, err)
				}
			}
		}
	}
	for _, want := range []string{"FleetlbProxiesDisconnected", "FleetlbProxyNACK", "FleetlbObjectsNotProgrammed",
		"FleetlbAddressPoolNearlyExhausted", "FleetlbTenantTokenRotationFailing"} {
		if !seen[want] {
			t.Errorf("no alert %s", want)
		}
	}
}
