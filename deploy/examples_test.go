package deploy

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
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
