package deploy

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/testenv"
	"github.com/fleetlb/fleetlb/manager/route"
)

// gatewayCRDs is the standard channel of the gateway-api module in go.mod.
func gatewayCRDs(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api").Output()
	if err != nil {
		t.Fatalf("locating sigs.k8s.io/gateway-api: %v", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "config", "crd", "standard")
}

// documents splits every YAML file of dir into its documents.
func documents(t *testing.T, dir string) [][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples in %s: %v", dir, err)
	}
	var docs [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range bytes.Split(b, []byte("\n---\n")) {
			if len(bytes.TrimSpace(d)) > 0 {
				docs = append(docs, d)
			}
		}
	}
	return docs
}

// decodeStrict fills out from doc, failing on any field the Go type lacks.
func decodeStrict(t *testing.T, doc []byte, out any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(doc, out); err != nil {
		t.Fatalf("%v in:\n%s", err, doc)
	}
}

// The examples in deploy/examples are created for real on an apiserver with
// the fleetlb and Gateway API CRDs (schema, CEL rules, strict field
// validation), decoded strictly into the Go types, and checked to fit
// together: what the tenant-side objects ask for is what the example Tenants allow.
func TestExamplesMatchTheAPI(t *testing.T) {
	env := testenv.Start(t, testenv.Options{ExtraCRDDirs: []string{gatewayCRDs(t)}})
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	examples := filepath.Join(root, "deploy", "examples")

	// Management side: cluster-scoped fleetlb.io objects.
	if out, err := env.Kubectl(ctx, "apply", "--server-side", "--validate=strict", "-f", filepath.Join(examples, "management")); err != nil {
		t.Fatalf("applying the management examples: %v\n%s", err, out)
	}
	var tenants []v1.Tenant
	kinds := map[string]int{}
	fleets, pools := map[string]bool{}, map[string]bool{}
	for _, doc := range documents(t, filepath.Join(examples, "management")) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatal(err)
		}
		kinds[tm.Kind]++
		switch tm.Kind {
		case "Tenant":
			var o v1.Tenant
			decodeStrict(t, doc, &o)
			tenants = append(tenants, o)
		case "ProxyFleet":
			var o v1.ProxyFleet
			decodeStrict(t, doc, &o)
			fleets[o.Name] = true
			if o.Spec.Exposure != v1.ExposureLoadBalancerService {
				t.Errorf("the example ProxyFleet is exposed by %q, want LoadBalancerService", o.Spec.Exposure)
			}
		case "AddressPool":
			var o v1.AddressPool
			decodeStrict(t, doc, &o)
			pools[o.Name] = true
		default:
			t.Errorf("unexpected kind %s among the management examples", tm.Kind)
		}
	}
	if kinds["AddressPool"] != 1 || kinds["ProxyFleet"] != 1 || kinds["Tenant"] != 2 {
		t.Errorf("management examples hold %v, want one AddressPool, one ProxyFleet, two Tenants", kinds)
	}
	for _, tn := range tenants {
		// Read back: defaults and CEL ran.
		var live v1.Tenant
		if out, err := env.Kubectl(ctx, "get", "tenant", tn.Name, "-o", "yaml"); err != nil {
			t.Fatalf("tenant %s not created: %v\n%s", tn.Name, err, out)
		} else {
			decodeStrict(t, []byte(out), &live)
		}
		if !pools[tn.Spec.AddressPool] || !fleets[tn.Spec.Fleet] {
			t.Errorf("tenant %s uses pool %q and fleet %q, which the examples do not define", tn.Name, tn.Spec.AddressPool, tn.Spec.Fleet)
		}
		if len(tn.Spec.NodeCIDRs) == 0 || len(tn.Spec.Hostnames) == 0 {
			t.Errorf("tenant %s has no nodeCIDRs or hostnames: it could serve nothing", tn.Name)
		}
		if live.Spec.Group != "shop" || live.Spec.NodePortRange == nil {
			t.Errorf("tenant %s read back as %+v", tn.Name, live.Spec)
		}
	}

	// Tenant side: plain Kubernetes and Gateway API objects, into a namespace.
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
	if err := env.Client.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if out, err := env.Kubectl(ctx, "apply", "--server-side", "--validate=strict", "-n", ns.Name, "-f", filepath.Join(examples, "tenant")); err != nil {
		t.Fatalf("applying the tenant examples: %v\n%s", err, out)
	}
	allowed := func(what string, h string) {
		for _, tn := range tenants {
			if !route.Allowed(tn.Spec.Hostnames, v1.Hostname(h)) {
				t.Errorf("%s uses hostname %q, which tenant %s may not claim", what, h, tn.Name)
			}
		}
	}
	kinds = map[string]int{}
	for _, doc := range documents(t, filepath.Join(examples, "tenant")) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatal(err)
		}
		kinds[tm.Kind]++
		switch tm.Kind {
		case "Service":
			var o corev1.Service
			decodeStrict(t, doc, &o)
			if o.Spec.Type == corev1.ServiceTypeLoadBalancer && (o.Spec.LoadBalancerClass == nil || *o.Spec.LoadBalancerClass != "fleetlb.io/lb") {
				t.Errorf("Service %s is of type LoadBalancer without class fleetlb.io/lb", o.Name)
			}
		case "Ingress":
			var o networkingv1.Ingress
			decodeStrict(t, doc, &o)
			if o.Spec.IngressClassName == nil || *o.Spec.IngressClassName != "fleetlb" || len(o.Spec.TLS) == 0 {
				t.Errorf("Ingress %s: want class fleetlb and TLS", o.Name)
			}
			for _, r := range o.Spec.Rules {
				allowed("Ingress "+o.Name, r.Host)
			}
		case "Gateway":
			var o gatewayv1.Gateway
			decodeStrict(t, doc, &o)
			if o.Spec.GatewayClassName != "fleetlb" {
				t.Errorf("Gateway %s has class %q, want fleetlb", o.Name, o.Spec.GatewayClassName)
			}
			for _, l := range o.Spec.Listeners {
				if l.Hostname == nil {
					t.Errorf("Gateway %s listener %s has no hostname", o.Name, l.Name)
					continue
				}
				allowed("Gateway "+o.Name, string(*l.Hostname))
			}
		case "HTTPRoute":
			var o gatewayv1.HTTPRoute
			decodeStrict(t, doc, &o)
			for _, h := range o.Spec.Hostnames {
				allowed("HTTPRoute "+o.Name, string(h))
			}
		default:
			t.Errorf("unexpected kind %s among the tenant examples", tm.Kind)
		}
	}
	for _, k := range []string{"Service", "Ingress", "Gateway", "HTTPRoute"} {
		if kinds[k] == 0 {
			t.Errorf("the tenant examples hold no %s", k)
		}
	}
}

// overlayBlocks returns the kustomization.yaml blocks of docs/install.md.
func overlayBlocks(t *testing.T, root string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "docs", "install.md"))
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	for _, part := range strings.Split(string(b), "```yaml\n")[1:] {
		block, _, _ := strings.Cut(part, "```")
		if lines := strings.SplitN(strings.TrimSpace(block), "\n", 2); strings.HasPrefix(lines[0], "# kustomization.yaml") {
			blocks = append(blocks, dedent(block))
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

// The overlays docs/install.md tells users to write render, with the bases of
// this tree, into what the guide says: images renamed, flags patched, the
// ccm's kubeconfig Secret next to the ccm.
func TestInstallGuideOverlays(t *testing.T) {
	env := testenv.Start(t, testenv.Options{NoCRDs: true})
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	blocks := overlayBlocks(t, root)
	if len(blocks) != 2 {
		t.Fatalf("docs/install.md has %d kustomization.yaml blocks, want 2 (manager, ccm)", len(blocks))
	}
	remote := regexp.MustCompile(`github\.com/fleetlb/fleetlb/(deploy/[a-z]+)\?ref=<version>`)
	for i, block := range blocks {
		dir := t.TempDir()
		m := remote.FindStringSubmatch(block)
		if m == nil {
			t.Fatalf("block %d names no github.com/fleetlb/fleetlb/deploy/... base:\n%s", i, block)
		}
		rel, err := filepath.Rel(dir, filepath.Join(root, m[1])) // kustomize takes no absolute bases
		if err != nil {
			t.Fatal(err)
		}
		k := remote.ReplaceAllString(block, rel)
		k = strings.ReplaceAll(k, "<VERSION>", "v9.9.9")
		if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "kubeconfig"), []byte("apiVersion: v1\nkind: Config\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		out := render(t, env, dir)
		dep := deployment(t, out)
		c := dep.Spec.Template.Spec.Containers[0]
		base := strings.TrimPrefix(m[1], "deploy/")
		if want := "registry.example.com/fleetlb/fleetlb-" + base + ":v9.9.9"; c.Image != want {
			t.Errorf("%s overlay: image %q, want %q", base, c.Image, want)
		}
		switch base {
		case "manager":
			if c.Args[0] != "--tenant-api-server=https://management.example.com:6443" || !slices.Contains(c.Args, "--tenant-api-ca-file=/var/run/secrets/kubernetes.io/serviceaccount/ca.crt") {
				t.Errorf("manager overlay args: %q", c.Args)
			}
		case "ccm":
			if c.Args[0] != "--cluster-name=shop-eu" {
				t.Errorf("ccm overlay args: %q", c.Args)
			}
			found := false
			for _, doc := range bytes.Split(out, []byte("\n---\n")) {
				var s corev1.Secret
				if err := yaml.Unmarshal(doc, &s); err == nil && s.Kind == "Secret" {
					found = s.Name == "fleetlb-management-kubeconfig" && s.Namespace == dep.Namespace && len(s.Data["kubeconfig"]) > 0
				}
			}
			if !found {
				t.Errorf("ccm overlay: no Secret fleetlb-management-kubeconfig with key kubeconfig in %s:\n%s", dep.Namespace, out)
			}
		default:
			t.Errorf("unexpected base %s", base)
		}
	}
}
