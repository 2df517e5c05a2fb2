// Package observability reads the alerting rules and the Grafana dashboard of
// deploy/observability and parses their PromQL with Prometheus's own parser,
// for the tests that check every expression parses and names only metrics
// fleetlb-manager serves. Tests and hack/ only: the binaries never import it.
package observability

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"
)

// Dir is deploy/observability relative to the repository's root.
const Dir = "deploy/observability"

// Expr is one PromQL expression and where it comes from.
type Expr struct {
	Where string // "prometheus-rules.yaml: FleetlbProxyNACK", "grafana-dashboard.json: panel NACKs"
	Query string
}

// Rule is one alerting rule of the rules file.
type Rule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// RuleFile is a Prometheus rule file (and a PrometheusRule's spec).
type RuleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []Rule `json:"rules"`
	} `json:"groups"`
}

// Rules reads deploy/observability/prometheus-rules.yaml strictly.
func Rules(root string) (*RuleFile, error) {
	b, err := os.ReadFile(filepath.Join(root, Dir, "prometheus-rules.yaml"))
	if err != nil {
		return nil, err
	}
	var f RuleFile
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return nil, fmt.Errorf("prometheus-rules.yaml: %w", err)
	}
	return &f, nil
}

// grafanaVariable is a dashboard variable in a query ($fleet, ${fleet}, $__rate_interval).
var grafanaVariable = regexp.MustCompile(`\$\{?(\w+)\}?`)

// labelValues is the query of a Grafana variable: label_values(metric, label).
var labelValues = regexp.MustCompile(`^label_values\(\s*([^,]+?)\s*,\s*\w+\s*\)$`)

// Expressions returns every PromQL expression of the rules and the
// dashboard, Grafana's variables replaced by values PromQL accepts.
func Expressions(root string) ([]Expr, error) {
	rules, err := Rules(root)
	if err != nil {
		return nil, err
	}
	var out []Expr
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			out = append(out, Expr{Where: "prometheus-rules.yaml: " + r.Alert, Query: r.Expr})
		}
	}
	b, err := os.ReadFile(filepath.Join(root, Dir, "grafana-dashboard.json"))
	if err != nil {
		return nil, err
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		return nil, fmt.Errorf("grafana-dashboard.json: %w", err)
	}
	for _, p := range dash.Panels {
		for _, t := range p.Targets {
			out = append(out, Expr{Where: "grafana-dashboard.json: panel " + p.Title, Query: grafanaQuery(t.Expr)})
		}
	}
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			return nil, fmt.Errorf("grafana-dashboard.json: variable %s: %w", v.Name, err)
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			return nil, fmt.Errorf("grafana-dashboard.json: variable %s: query %q is not label_values(metric, label)", v.Name, q.Query)
		}
		out = append(out, Expr{Where: "grafana-dashboard.json: variable " + v.Name, Query: grafanaQuery(m[1])})
	}
	return out, nil
}

// grafanaQuery replaces Grafana's variables: intervals by 5m, the others
// (used in =~ matchers) by .*.
func grafanaQuery(q string) string {
	return grafanaVariable.ReplaceAllStringFunc(q, func(v string) string {
		if strings.Contains(v, "interval") {
			return "5m"
		}
		return ".*"
	})
}

// MetricNames parses an expression with Prometheus's PromQL parser and
// returns the metric names its selectors name, sorted. A selector without a
// name is an error: every series an alert reads must be one the manager serves.
func MetricNames(query string) ([]string, error) {
	expr, err := parser.NewParser(parser.Options{}).ParseExpr(query)
	if err != nil {
		return nil, err
	}
	var names []string
	var missing error
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		if name == "" {
			for _, m := range vs.LabelMatchers {
				if m.Name == "__name__" && m.Type.String() == "=" {
					name = m.Value
				}
			}
		}
		if name == "" {
			missing = fmt.Errorf("selector %s names no metric", vs)
		}
		names = append(names, name)
		return nil
	})
	if missing != nil {
		return nil, missing
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// BaseName is the metric a series name belongs to: histograms are served as
// <name>_bucket, _sum and _count.
func BaseName(series string) string {
	for _, s := range []string{"_bucket", "_sum", "_count"} {
		if b, ok := strings.CutSuffix(series, s); ok {
			return b
		}
	}
	return series
}
