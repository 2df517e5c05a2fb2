// Tests of the Helm charts in deploy/charts and the plain manifests rendered
// from them (deploy/install): helm lint and the values schemas through Helm's
// Go SDK, and the rendered objects applied to a real control plane, whose
// authorizer checks the RBAC; every flag the Deployments pass exists in the binaries.
package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/ccm/gateway"
	"github.com/fleetlb/fleetlb/ccm/ingress"
	"github.com/fleetlb/fleetlb/hack/helmrender"
	"github.com/fleetlb/fleetlb/hack/observability"
	"github.com/fleetlb/fleetlb/internal/testenv"
	"github.com/fleetlb/fleetlb/manager/fleet"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// Value sets the tests render besides the defaults: every optional part on.
var (
	managerMinimal = map[string]any{"tenantAPIServer": "https://management.example.com:6443"}
	managerFull    = map[string]any{
		"tenantAPIServer": "https://management.example.com:6443", "tenantAPICAFile": "/etc/fleetlb/ca/ca.crt", "tenantTokenTTL": "30m",
		"image":                map[string]any{"registry": "registry.example.com/fleetlb", "tag": "v9.9.9"},
		"replicas":             3,
		"xds":                  map[string]any{"certificateHosts": []any{"xds.example.com", "192.0.2.1"}, "delta": false, "service": map[string]any{"type": "LoadBalancer"}},
		"namespace":            map[string]any{"create": true, "podSecurity": "privileged"},
		"defaultFleetExposure": "HostNetwork", "createDefaultFleet": false, "backendDenyCIDRs": []any{"127.0.0.0/8", "::1/128"},
		"extraArgs":         []any{"--zap-log-level=debug"},
		"extraVolumes":      []any{map[string]any{"name": "ca", "configMap": map[string]any{"name": "management-ca"}}},
		"extraVolumeMounts": []any{map[string]any{"name": "ca", "mountPath": "/etc/fleetlb/ca"}},
		"serviceMonitor":    map[string]any{"enabled": true, "labels": map[string]any{"release": "prometheus"}},
		"prometheusRule":    map[string]any{"enabled": true},
		"grafanaDashboard":  map[string]any{"enabled": true},
		"addressPool":       map[string]any{"create": true, "name": "public", "addresses": []any{"203.0.113.0/28", "203.0.113.100-203.0.113.110"}},
		"proxyFleet":        map[string]any{"create": true, "name": "edge", "exposure": "HostNetwork", "replicas": 3},
	}
	ccmMinimal = map[string]any{"clusterName": "shop-eu"}
	ccmFull    = map[string]any{
		"clusterName":          "shop-us",
		"managementKubeconfig": map[string]any{"create": true, "kubeconfig": "apiVersion: v1\nkind: Config\n", "secretName": "management"},
		"defaultClass":         true, "nodeAddressType": "ExternalIP",
		"ingressClass":   map[string]any{"name": "edge", "default": true},
		"gatewayClass":   map[string]any{"name": "edge", "create": true},
		"namespace":      map[string]any{"create": true},
		"serviceMonitor": map[string]any{"enabled": true},
	}
)

func chartDir(t *testing.T, name string) string {
	t.Helper()
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "deploy", "charts", name)
}

// TestChartsLint runs helm lint's rules on both charts with the value sets, and
// checks the values schemas refuse what the binaries or the API would.
func TestChartsLint(t *testing.T) {
	for _, c := range []struct {
		chart  string
		values []map[string]any
	}{{"fleetlb", []map[string]any{managerMinimal, managerFull}}, {"fleetlb-ccm", []map[string]any{ccmMinimal, ccmFull}}} {
		for i, vals := range c.values {
			for _, m := range helmrender.Lint(chartDir(t, c.chart), "fleetlb-system", vals) {
				t.Errorf("helm lint %s (value set %d): %s", c.chart, i, m)
			}
		}
	}
	// Lint reports what the schema refuses.
	if msgs := helmrender.Lint(chartDir(t, "fleetlb-ccm"), "fleetlb-system", nil); len(msgs) == 0 {
		t.Error("helm lint passes fleetlb-ccm without clusterName")
	}

	refused := []struct {
		chart string
		vals  map[string]any
	}{
		{"fleetlb", nil}, // tenantAPIServer is required
		{"fleetlb", map[string]any{"tenantAPIServer": "http://management.example.com"}},
		{"fleetlb", map[string]any{"tenantAPIServer": "https://m", "replicas": 0}},
		{"fleetlb", map[string]any{"tenantAPIServer": "https://m", "replica": 2}},
		{"fleetlb", map[string]any{"tenantAPIServer": "https://m", "tenantTokenTTL": "1 hour"}},
		{"fleetlb", map[string]any{"tenantAPIServer": "https://m", "image": map[string]any{"digest": "latest"}}},
		{"fleetlb", map[string]any{"tenantAPIServer": "https://m", "addressPool": map[string]any{"create": true}}},
		{"fleetlb", map[string]any{"tenantAPIServer": "https://m", "proxyFleet": map[string]any{"exposure": "NodePort"}}},
		{"fleetlb", map[string]any{"tenantAPIServer": "https://m", "extraArgs": []any{"-v=4"}}},
		{"fleetlb-ccm", map[string]any{}},
		{"fleetlb-ccm", map[string]any{"clusterName": "a", "nodeAddressType": "Hostname"}},
		{"fleetlb-ccm", map[string]any{"clusterName": "a", "managementKubeconfig": map[string]any{"create": true}}},
		{"fleetlb-ccm", map[string]any{"clusterName": "a", "ingressClass": map[string]any{"name": "Not_A_Name"}}},
	}
	for _, r := range refused {
		c, err := helmrender.Load(chartDir(t, r.chart))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := helmrender.Values(c, "r", "fleetlb-system", r.vals); err == nil {
			t.Errorf("%s accepts values %v", r.chart, r.vals)
		}
	}
}

// objects splits rendered manifests into their objects.
func objects(t *testing.T, manifests []byte) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, doc := range regexp.MustCompile(`(?m)^---$`).Split(string(manifests), -1) {
		var u unstructured.Unstructured
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatalf("%v in:\n%s", err, doc)
		}
		if len(u.Object) > 0 {
			out = append(out, &u)
		}
	}
	return out
}

// find decodes the one object of kind and name, strictly.
func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string, into any) {
	t.Helper()
	for _, u := range objs {
		if u.GetKind() == kind && u.GetName() == name {
			b, err := yaml.Marshal(u.Object)
			if err != nil {
				t.Fatal(err)
			}
			if err := yaml.UnmarshalStrict(b, into); err != nil {
				t.Fatalf("%s %s: %v", kind, name, err)
			}
			return
		}
	}
	t.Fatalf("no %s %s in the manifests", kind, name)
}

// apply applies manifests with server-side apply and strict field validation.
func apply(t *testing.T, env *testenv.Env, manager string, manifests []byte) {
	t.Helper()
	f := filepath.Join(t.TempDir(), manager+".yaml")
	if err := os.WriteFile(f, manifests, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := env.Kubectl(context.Background(), "apply", "--server-side", "--force-conflicts", "--field-manager", manager,
		"--validate=strict", "-f", f); err != nil {
		t.Fatalf("applying %s: %v\n%s", manager, err, out)
	}
}

var flagLine = regexp.MustCompile(`(?m)^\s+-([a-z0-9-]+)`)

// flagsOf builds a command and returns the flags its --help lists.
func flagsOf(t *testing.T, cmd string) map[string]bool {
	t.Helper()
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), cmd)
	build := exec.Command("go", "build", "-o", bin, "./cmd/"+cmd)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", cmd, err, out)
	}
	out, _ := exec.Command(bin, "--help").CombinedOutput() // --help exits 0 or 2 by flag package version
	flags := map[string]bool{}
	for _, m := range flagLine.FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	if len(flags) < 5 {
		t.Fatalf("%s --help lists %d flags:\n%s", cmd, len(flags), out)
	}
	return flags
}

// checkArgs fails on any argument of the Deployment's container the binary does not accept.
func checkArgs(t *testing.T, dep *appsv1.Deployment, flags map[string]bool) {
	t.Helper()
	for _, a := range dep.Spec.Template.Spec.Containers[0].Args {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "--") || !flags[name] {
			t.Errorf("%s passes %q, which the binary does not accept", dep.Name, a)
		}
	}
}

// The plain manifests and the charts with every option, applied to a real
// control plane with server-side apply: the CRDs, RBAC and admission policies
// for real (the authorizer then checks what the ServiceAccounts may do), the
// Deployments as objects (nothing runs pods here).
func TestChartsApply(t *testing.T) {
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	env := testenv.Start(t, testenv.Options{NoCRDs: true, ExtraCRDDirs: []string{filepath.Join(root, "deploy", "testdata", "crds"), gatewayCRDs(t)}})
	ctx := context.Background()
	managerFlags, ccmFlags := flagsOf(t, "fleetlb-manager"), flagsOf(t, "fleetlb-ccm")
	chart := func(name string) string { return filepath.Join(root, "deploy", "charts", name) }
	appVersion := func(name string) string {
		c, err := helmrender.Load(chart(name))
		if err != nil {
			t.Fatal(err)
		}
		return c.Metadata.AppVersion
	}

	// The plain manifests, as users without Helm apply them.
	plain := map[string][]byte{}
	for _, name := range []string{"fleetlb", "fleetlb-ccm"} {
		b, err := os.ReadFile(filepath.Join(root, "deploy", "install", name+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		plain[name] = b
		// CRDs first, so the ones the chart brings are established before anything uses them.
		apply(t, env, name, b)
	}
	mgrObjs, ccmObjs := objects(t, plain["fleetlb"]), objects(t, plain["fleetlb-ccm"])
	var mgr, ccm appsv1.Deployment
	find(t, mgrObjs, "Deployment", "fleetlb-manager", &mgr)
	find(t, ccmObjs, "Deployment", "fleetlb-ccm", &ccm)
	checkArgs(t, &mgr, managerFlags)
	checkArgs(t, &ccm, ccmFlags)
	for _, c := range []struct {
		dep   *appsv1.Deployment
		image string
	}{{&mgr, "ghcr.io/fleetlb/fleetlb-manager:" + appVersion("fleetlb")}, {&ccm, "ghcr.io/fleetlb/fleetlb-ccm:" + appVersion("fleetlb-ccm")}} {
		var live appsv1.Deployment
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(c.dep), &live); err != nil {
			t.Fatalf("%s not applied: %v", c.dep.Name, err)
		}
		if live.Namespace != "fleetlb-system" || *live.Spec.Replicas != 2 {
			t.Errorf("%s: namespace %s, %d replicas", live.Name, live.Namespace, *live.Spec.Replicas)
		}
		// What `make push REGISTRY=ghcr.io/fleetlb VERSION=<appVersion>` pushes.
		if img := live.Spec.Template.Spec.Containers[0].Image; img != c.image {
			t.Errorf("%s: image %q, want %q", live.Name, img, c.image)
		}
	}
	if !slices.Contains(mgr.Spec.Template.Spec.Containers[0].Args, "--leader-elect=true") || !slices.Contains(ccm.Spec.Template.Spec.Containers[0].Args, "--leader-elect=true") {
		t.Error("a Deployment of 2 replicas runs without leader election")
	}
	var crds int
	for _, u := range mgrObjs {
		if u.GetKind() == "CustomResourceDefinition" {
			crds++
		}
	}
	if crds != 6 {
		t.Errorf("the manager's manifests hold %d CRDs, want 6", crds)
	}
	for _, kind := range []string{"PodDisruptionBudget", "Service", "Namespace"} {
		found := false
		for _, u := range mgrObjs {
			found = found || u.GetKind() == kind
		}
		if !found {
			t.Errorf("the manager's manifests hold no %s", kind)
		}
	}
	var ic networkingv1.IngressClass
	if err := env.Client.Get(ctx, client.ObjectKey{Name: ingress.DefaultClass}, &ic); err != nil || ic.Spec.Controller != ingress.ControllerName {
		t.Errorf("IngressClass %s: %v, controller %q", ingress.DefaultClass, err, ic.Spec.Controller)
	}

	// The manager's ServiceAccount may do what its controllers do, checked by the real authorizer.
	sa := "system:serviceaccount:fleetlb-system:fleetlb-manager"
	for _, ra := range []authorizationv1.ResourceAttributes{
		{Verb: "create", Group: "apps", Resource: "deployments", Namespace: "fleetlb-system"},
		{Verb: "patch", Group: "", Resource: "configmaps", Namespace: "fleetlb-system"},
		{Verb: "patch", Group: "fleetlb.io", Resource: "proxyfleets", Subresource: "status"},
		{Verb: "patch", Group: "fleetlb.io", Resource: "addresspools", Subresource: "status"},
		{Verb: "update", Group: "fleetlb.io", Resource: "loadbalancers", Namespace: "tenant-a"},
		{Verb: "create", Group: "", Resource: "serviceaccounts", Subresource: "token", Namespace: "tenant-a", Name: tenant.CCMName},
		{Verb: "create", Group: "", Resource: "namespaces"},
		{Verb: "update", Group: "coordination.k8s.io", Resource: "leases", Namespace: "fleetlb-system"},
		{Verb: "create", Group: "events.k8s.io", Resource: "events", Namespace: "default"},
		{Verb: "create", Group: "cert-manager.io", Resource: "certificates", Namespace: "tenant-a"},
		{Verb: "delete", Group: "", Resource: "secrets", Namespace: "tenant-a"},
	} {
		if !allowed(t, env, sa, ra) {
			t.Errorf("the manager may not %s %s/%s %s in %q", ra.Verb, ra.Group, ra.Resource, ra.Subresource, ra.Namespace)
		}
	}
	// Token requests only for the tenants' ccm ServiceAccounts.
	for _, c := range []struct {
		ns, name string
		want     bool
	}{{"tenant-a", tenant.CCMName, true}, {"tenant-a", "default", false}, {"fleetlb-system", "fleetlb-manager", false}, {"kube-system", "admin", false}} {
		ra := authorizationv1.ResourceAttributes{Verb: "create", Resource: "serviceaccounts", Subresource: "token", Namespace: c.ns, Name: c.name}
		if got := allowed(t, env, sa, ra); got != c.want {
			t.Errorf("the manager may request a token for %s/%s: %v, want %v", c.ns, c.name, got, c.want)
		}
	}
	// No wildcard anywhere in either component's rules.
	roles := 0
	for _, u := range append(slices.Clone(mgrObjs), ccmObjs...) {
		if u.GetKind() != "ClusterRole" && u.GetKind() != "Role" {
			continue
		}
		roles++
		var r rbacv1.ClusterRole
		find(t, []*unstructured.Unstructured{u}, u.GetKind(), u.GetName(), &r)
		for _, rule := range r.Rules {
			if slices.Contains(rule.Verbs, "*") || slices.Contains(rule.Resources, "*") || slices.Contains(rule.APIGroups, "*") {
				t.Errorf("%s %s has a wildcard rule: %+v", u.GetKind(), u.GetName(), rule)
			}
		}
	}
	if roles < 6 {
		t.Errorf("found %d roles", roles)
	}
	// The tenant policies are installed (their behaviour is tested in manager/tenant).
	for _, name := range []string{"fleetlb-tenant-secrets", "fleetlb-tenant-finalizers"} {
		if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}); err != nil {
			t.Errorf("policy binding %s not applied: %v", name, err)
		}
	}
	// The ccm may store its renewed kubeconfig, in that one Secret only.
	ccmSA := "system:serviceaccount:fleetlb-system:fleetlb-ccm"
	for name, want := range map[string]bool{"fleetlb-management-kubeconfig": true, "another": false} {
		ra := authorizationv1.ResourceAttributes{Verb: "patch", Resource: "secrets", Namespace: "fleetlb-system", Name: name}
		if got := allowed(t, env, ccmSA, ra); got != want {
			t.Errorf("the ccm may patch Secret %s: %v, want %v", name, got, want)
		}
	}
	// And the manager can hand a tenant's ccm its Role (RBAC refuses to grant what the granter lacks).
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: sa}
	as, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "tenant-deploytest"}}
	if err := as.Create(ctx, ns); err != nil {
		t.Fatalf("as the manager: %v", err)
	}
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: tenant.CCMName}, Rules: tenant.CCMRules()}
	if err := as.Create(ctx, role); err != nil {
		t.Errorf("as the manager, creating the ccm Role: %v", err)
	}
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: tenant.CCMName},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: tenant.CCMName},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: tenant.CCMName, Namespace: ns.Name}},
	}
	if err := as.Create(ctx, rb); err != nil {
		t.Errorf("as the manager, binding the ccm Role: %v", err)
	}

	// Every option on, in other namespaces.
	t.Run("fleetlb with every option", func(t *testing.T) {
		out, err := helmrender.Render(chart("fleetlb"), "lb", "lb-system", managerFull)
		if err != nil {
			t.Fatal(err)
		}
		apply(t, env, "lb", out)
		objs := objects(t, out)
		var dep appsv1.Deployment
		find(t, objs, "Deployment", "fleetlb-manager", &dep)
		checkArgs(t, &dep, managerFlags)
		args := dep.Spec.Template.Spec.Containers[0].Args
		for _, want := range []string{"--fleet-xds-address=fleetlb-manager.lb-system.svc:18000", "--xds-certificate-hosts=xds.example.com,192.0.2.1",
			"--tenant-api-ca-file=/etc/fleetlb/ca/ca.crt", "--fleet-xds-delta=false", "--default-fleet-exposure=HostNetwork",
			"--backend-deny-cidrs=127.0.0.0/8,::1/128", "--zap-log-level=debug", "--create-default-fleet=false"} {
			if !slices.Contains(args, want) {
				t.Errorf("args %q lack %s", args, want)
			}
		}
		if img := dep.Spec.Template.Spec.Containers[0].Image; img != "registry.example.com/fleetlb/fleetlb-manager:v9.9.9" {
			t.Errorf("image %q", img)
		}
		// The chart's ProxyFleet leaves the Envoy image to the API default, the version the manager pins.
		var pf v1.ProxyFleet
		if err := env.Client.Get(ctx, client.ObjectKey{Name: "edge"}, &pf); err != nil {
			t.Fatal(err)
		}
		if pf.Spec.Image != fleet.DefaultImage || pf.Spec.AddressPool != "public" || pf.Spec.Exposure != v1.ExposureHostNetwork {
			t.Errorf("ProxyFleet edge read back as %+v", pf.Spec)
		}
		var pool v1.AddressPool
		if err := env.Client.Get(ctx, client.ObjectKey{Name: "public"}, &pool); err != nil || len(pool.Spec.Addresses) != 2 {
			t.Errorf("AddressPool public: %v %+v", err, pool.Spec)
		}
		// The alerts and the dashboard are deploy/observability's.
		rules, err := observability.Rules(root)
		if err != nil {
			t.Fatal(err)
		}
		var pr struct {
			Spec observability.RuleFile `json:"spec"`
		}
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("monitoring.coreos.com/v1")
		u.SetKind("PrometheusRule")
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "lb-system", Name: "fleetlb"}, u); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(u.Object)
		if err := json.Unmarshal(b, &pr); err != nil || len(pr.Spec.Groups) != len(rules.Groups) || len(pr.Spec.Groups[0].Rules) != len(rules.Groups[0].Rules) {
			t.Errorf("PrometheusRule fleetlb: %v, %d groups, want %d", err, len(pr.Spec.Groups), len(rules.Groups))
		}
		u.SetKind("ServiceMonitor")
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "lb-system", Name: "fleetlb-manager"}, u); err != nil || u.GetLabels()["release"] != "prometheus" {
			t.Errorf("ServiceMonitor: %v, labels %v", err, u.GetLabels())
		}
		var cm corev1.ConfigMap
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "lb-system", Name: "fleetlb-grafana-dashboard"}, &cm); err != nil {
			t.Fatal(err)
		}
		dash, err := os.ReadFile(filepath.Join(root, observability.Dir, "grafana-dashboard.json"))
		if err != nil {
			t.Fatal(err)
		}
		if got := cm.Data["fleetlb.json"]; got != strings.TrimRight(string(dash), "\n") || cm.Labels["grafana_dashboard"] != "1" {
			t.Errorf("the dashboard ConfigMap holds %d bytes (labels %v), want deploy/observability's %d", len(got), cm.Labels, len(dash))
		}
		var nsObj corev1.Namespace
		if err := env.Client.Get(ctx, client.ObjectKey{Name: "lb-system"}, &nsObj); err != nil || nsObj.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
			t.Errorf("namespace lb-system: %v %v", err, nsObj.Labels)
		}
	})

	t.Run("fleetlb-ccm with every option", func(t *testing.T) {
		out, err := helmrender.Render(chart("fleetlb-ccm"), "ccm", "ccm-system", ccmFull)
		if err != nil {
			t.Fatal(err)
		}
		apply(t, env, "ccm", out)
		objs := objects(t, out)
		var dep appsv1.Deployment
		find(t, objs, "Deployment", "fleetlb-ccm", &dep)
		checkArgs(t, &dep, ccmFlags)
		args := dep.Spec.Template.Spec.Containers[0].Args
		for _, want := range []string{"--cluster-name=shop-us", "--management-kubeconfig-secret=ccm-system/management", "--default-class=true",
			"--ingress-class=edge", "--gateway-class=edge", "--node-address-type=ExternalIP", "--leader-election-namespace=ccm-system"} {
			if !slices.Contains(args, want) {
				t.Errorf("args %q lack %s", args, want)
			}
		}
		if v := dep.Spec.Template.Spec.Volumes; !slices.ContainsFunc(v, func(v corev1.Volume) bool { return v.Secret != nil && v.Secret.SecretName == "management" }) {
			t.Errorf("volumes %+v do not mount Secret management", v)
		}
		var sec corev1.Secret
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "ccm-system", Name: "management"}, &sec); err != nil || !bytes.Contains(sec.Data["kubeconfig"], []byte("kind: Config")) {
			t.Errorf("Secret management: %v %q", err, sec.Data["kubeconfig"])
		}
		gc := &unstructured.Unstructured{}
		gc.SetGroupVersionKind(gatewayv1.SchemeGroupVersion.WithKind("GatewayClass"))
		err = env.Client.Get(ctx, client.ObjectKey{Name: "edge"}, gc)
		if controller, _, _ := unstructured.NestedString(gc.Object, "spec", "controllerName"); err != nil || controller != string(gateway.ControllerName) {
			t.Errorf("GatewayClass edge: %v, controller %q", err, controller)
		}
		var ic networkingv1.IngressClass
		if err := env.Client.Get(ctx, client.ObjectKey{Name: "edge"}, &ic); err != nil || ic.Annotations["ingressclass.kubernetes.io/is-default-class"] != "true" {
			t.Errorf("IngressClass edge: %v %v", err, ic.Annotations)
		}
		// The ccm's renewed kubeconfig goes to the Secret the chart names.
		ra := authorizationv1.ResourceAttributes{Verb: "patch", Resource: "secrets", Namespace: "ccm-system", Name: "management"}
		if !allowed(t, env, "system:serviceaccount:ccm-system:fleetlb-ccm", ra) {
			t.Error("the ccm may not patch its kubeconfig Secret management")
		}
	})
}

// The Envoy image's version is pinned once, in manager/fleet: the CRD's
// default (from api/v1alpha1) agrees, and nothing in deploy/ or the install
// guide pins another.
func TestEnvoyImagePinnedOnce(t *testing.T) {
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "deploy", "charts", "fleetlb", "crds", "fleetlb.io_proxyfleets.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var crd struct {
		Spec struct {
			Versions []struct {
				Schema struct {
					OpenAPIV3Schema struct {
						Properties struct {
							Spec struct {
								Properties map[string]struct {
									Default any `json:"default"`
								} `json:"properties"`
							} `json:"spec"`
						} `json:"properties"`
					} `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(b, &crd); err != nil {
		t.Fatal(err)
	}
	if len(crd.Spec.Versions) == 0 {
		t.Fatal("no versions in the ProxyFleet CRD")
	}
	if got := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties.Spec.Properties["image"].Default; got != fleet.DefaultImage {
		t.Errorf("the ProxyFleet CRD defaults spec.image to %v, manager/fleet to %s: change the kubebuilder default in api/v1alpha1 and run make generate", got, fleet.DefaultImage)
	}
	envoy := regexp.MustCompile(`envoyproxy/envoy:v[0-9.]+`)
	for _, dir := range []string{"deploy/charts", "deploy/install", "deploy/examples", "deploy/observability", "docs"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			for _, m := range envoy.FindAllString(string(b), -1) {
				if m != fleet.DefaultImage {
					t.Errorf("%s names %s, not the pinned %s", p, m, fleet.DefaultImage)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// allowed asks the real authorizer whether user may do ra.
func allowed(t *testing.T, env *testenv.Env, user string, ra authorizationv1.ResourceAttributes) bool {
	t.Helper()
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: user, ResourceAttributes: &ra}}
	if err := env.Client.Create(context.Background(), sar); err != nil {
		t.Fatal(err)
	}
	return sar.Status.Allowed
}
