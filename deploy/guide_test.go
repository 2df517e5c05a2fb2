package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/fleetlb/fleetlb/hack/helmrender"
	"github.com/fleetlb/fleetlb/internal/testenv"
)

// guideBlocks returns the ```yaml blocks of docs/install.md whose first line
// is "# <name>", by name.
func guideBlocks(t *testing.T, root string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "docs", "install.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := map[string]string{}
	for _, part := range strings.Split(string(b), "```yaml\n")[1:] {
		block, _, _ := strings.Cut(part, "```")
		block = dedent(block)
		first, _, _ := strings.Cut(strings.TrimSpace(block), "\n")
		if name, ok := strings.CutPrefix(first, "# "); ok {
			name, _, _ = strings.Cut(name, ",")
			blocks[strings.TrimSpace(name)] = block
		}
	}
	return blocks
}

// dedent removes the indentation of the block's first line from every line.
func dedent(s string) string {
	first := strings.TrimLeft(s, "\n")
	indent := first[:len(first)-len(strings.TrimLeft(first, " "))]
	var out []string
	for _, l := range strings.Split(s, "\n") {
		out = append(out, strings.TrimPrefix(l, indent))
	}
	return strings.Join(out, "\n")
}

// deploymentIn decodes the Deployment of rendered manifests.
func deploymentIn(t *testing.T, manifests []byte) *appsv1.Deployment {
	t.Helper()
	objs := objects(t, manifests)
	for _, u := range objs {
		if u.GetKind() == "Deployment" {
			var d appsv1.Deployment
			find(t, objs, "Deployment", u.GetName(), &d)
			return &d
		}
	}
	t.Fatal("no Deployment in the manifests")
	return nil
}

// The values files and the kustomize overlays docs/install.md tells users to
// write render, with the charts and the plain manifests of this tree, into
// what the guide says: images from the user's registry, flags set, the ccm's
// kubeconfig Secret next to the ccm.
func TestInstallGuide(t *testing.T) {
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	assets, err := testenv.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	blocks := guideBlocks(t, root)
	version := func(s string) string { return strings.ReplaceAll(s, "<VERSION>", "v9.9.9") }
	check := func(what, component string, dep *appsv1.Deployment, wantArg string) {
		t.Helper()
		c := dep.Spec.Template.Spec.Containers[0]
		if want := "registry.example.com/fleetlb/fleetlb-" + component + ":v9.9.9"; c.Image != want {
			t.Errorf("%s: image %q, want %q", what, c.Image, want)
		}
		if !slices.Contains(c.Args, wantArg) {
			t.Errorf("%s: args %q lack %s", what, c.Args, wantArg)
		}
	}

	// Helm: the values files.
	for _, c := range []struct{ block, chart, component, arg string }{
		{"values-fleetlb.yaml", "fleetlb", "manager", "--tenant-api-server=https://management.example.com:6443"},
		{"values-fleetlb-ccm.yaml", "fleetlb-ccm", "ccm", "--cluster-name=shop-eu"},
	} {
		block, ok := blocks[c.block]
		if !ok {
			t.Errorf("docs/install.md has no ```yaml block starting with # %s", c.block)
			continue
		}
		var vals map[string]any
		if err := yaml.Unmarshal([]byte(version(block)), &vals); err != nil {
			t.Fatalf("%s: %v", c.block, err)
		}
		out, err := helmrender.Render(filepath.Join(root, "deploy", "charts", c.chart), c.chart, "fleetlb-system", vals)
		if err != nil {
			t.Fatalf("%s: %v", c.block, err)
		}
		check(c.block, c.component, deploymentIn(t, out), c.arg)
	}

	// Without Helm: kustomize overlays of the plain manifests.
	remote := regexp.MustCompile(`https://raw\.githubusercontent\.com/fleetlb/fleetlb/<version>/deploy/install/([a-z-]+\.yaml)`)
	for _, c := range []struct{ block, component, arg string }{
		{"kustomization.yaml (management cluster)", "manager", "--tenant-api-server=https://management.example.com:6443"},
		{"kustomization.yaml (tenant cluster)", "ccm", "--cluster-name=shop-eu"},
	} {
		block, ok := blocks[c.block]
		if !ok {
			t.Errorf("docs/install.md has no ```yaml block starting with # %s", c.block)
			continue
		}
		m := remote.FindStringSubmatch(block)
		if m == nil {
			t.Fatalf("%s names no deploy/install manifest:\n%s", c.block, block)
		}
		// kustomize loads files only from below the kustomization: a copy of the tree's manifest.
		dir := t.TempDir()
		b, err := os.ReadFile(filepath.Join(root, "deploy", "install", m[1]))
		if err != nil {
			t.Fatal(err)
		}
		for name, content := range map[string][]byte{m[1]: b, "kustomization.yaml": []byte(version(remote.ReplaceAllString(block, m[1]))),
			"kubeconfig": []byte("apiVersion: v1\nkind: Config\n")} {
			if err := os.WriteFile(filepath.Join(dir, name), content, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		out, err := exec.Command(filepath.Join(assets, "kubectl"), "kustomize", dir).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: kubectl kustomize: %v\n%s", c.block, err, out)
		}
		dep := deploymentIn(t, out)
		check(c.block, c.component, dep, c.arg)
		if c.component != "ccm" {
			continue
		}
		found := false
		for _, u := range objects(t, out) {
			if u.GetKind() == "Secret" && u.GetName() == "fleetlb-management-kubeconfig" && u.GetNamespace() == dep.Namespace {
				var s corev1.Secret
				find(t, []*unstructured.Unstructured{u}, "Secret", u.GetName(), &s)
				found = len(s.Data["kubeconfig"]) > 0
			}
		}
		if !found {
			t.Errorf("%s: no Secret fleetlb-management-kubeconfig with key kubeconfig in %s:\n%s", c.block, dep.Namespace, out)
		}
	}
}
