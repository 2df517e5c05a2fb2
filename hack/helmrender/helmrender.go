// Package helmrender renders and lints the charts of deploy/charts with Helm's
// Go SDK, as `helm template --include-crds` and `helm lint` do. It is used by
// `make manifests` and by tests only: the binaries never import Helm.
package helmrender

import (
	"bytes"
	"fmt"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"helm.sh/helm/v3/pkg/releaseutil"
)

// KubeVersion is the Kubernetes version charts are rendered and linted for:
// the one the project tests against (bin/k8s).
var KubeVersion = chartutil.KubeVersion{Version: "v1.37.1", Major: "1", Minor: "37"}

func capabilities() *chartutil.Capabilities {
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion = KubeVersion
	return caps
}

// Load reads the chart in dir.
func Load(dir string) (*chart.Chart, error) {
	return loader.Load(dir)
}

// Values are the chart's values.yaml merged with values, checked against
// values.schema.json, as a release named release in namespace would see them.
func Values(c *chart.Chart, release, namespace string, values map[string]any) (chartutil.Values, error) {
	caps := capabilities()
	if c.Metadata.KubeVersion != "" && !chartutil.IsCompatibleRange(c.Metadata.KubeVersion, caps.KubeVersion.String()) {
		return nil, fmt.Errorf("chart %s requires Kubernetes %s, not %s", c.Name(), c.Metadata.KubeVersion, caps.KubeVersion)
	}
	return chartutil.ToRenderValues(c, values, chartutil.ReleaseOptions{Name: release, Namespace: namespace, IsInstall: true, Revision: 1}, caps)
}

// Render renders the chart in dir as release in namespace with values: the
// CRDs of crds/, then the templates' objects in Helm's install order, each
// document preceded by "# Source: <file>".
func Render(dir, release, namespace string, values map[string]any) ([]byte, error) {
	c, err := Load(dir)
	if err != nil {
		return nil, err
	}
	vals, err := Values(c, release, namespace, values)
	if err != nil {
		return nil, err
	}
	files, err := engine.Engine{Strict: true}.Render(c, vals)
	if err != nil {
		return nil, err
	}
	for name := range files {
		if strings.HasSuffix(name, "NOTES.txt") {
			delete(files, name)
		}
	}
	hooks, manifests, err := releaseutil.SortManifests(files, nil, releaseutil.InstallOrder)
	if err != nil {
		return nil, err
	}
	if len(hooks) > 0 {
		return nil, fmt.Errorf("chart %s has hooks, which plain manifests cannot express", c.Name())
	}
	var b bytes.Buffer
	for _, crd := range c.CRDObjects() {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", crd.Filename, strings.TrimSpace(strings.TrimPrefix(string(crd.File.Data), "---\n")))
	}
	for _, m := range manifests {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", m.Name, strings.TrimSpace(m.Content))
	}
	return b.Bytes(), nil
}

// Lint runs helm lint's rules (Chart.yaml, values and schema, templates,
// dependencies) on the chart in dir with values, and returns the messages at
// warning severity or above.
func Lint(dir, namespace string, values map[string]any) []support.Message {
	kv := KubeVersion
	l := lint.AllWithKubeVersion(dir, values, namespace, &kv)
	var out []support.Message
	for _, m := range l.Messages {
		if m.Severity >= support.WarningSev {
			out = append(out, m)
		}
	}
	return out
}
