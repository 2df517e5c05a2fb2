// Package deploy holds the kustomize bases; this test renders them, applies
// them to a real control plane, checks the manager's RBAC against the real
// authorizer, and checks that every flag they pass exists in the binaries.
package deploy

import (
	"bytes"
	"context"
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
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/fleetlb/fleetlb/internal/testenv"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// render runs kubectl kustomize on a base.
func render(t *testing.T, env *testenv.Env, base string) []byte {
	t.Helper()
	out, err := env.Kubectl(context.Background(), "kustomize", base)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(out)
}

// deployment finds the one Deployment in rendered manifests.
func deployment(t *testing.T, manifests []byte) *appsv1.Deployment {
	t.Helper()
	for _, doc := range bytes.Split(manifests, []byte("\n---\n")) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatal(err)
		}
		if tm.Kind == "Deployment" {
			var d appsv1.Deployment
			if err := yaml.UnmarshalStrict(doc, &d); err != nil {
				t.Fatal(err)
			}
			return &d
		}
	}
	t.Fatal("no Deployment in the manifests")
	return nil
}

var flagLine = regexp.MustCompile(`(?m)^\s+-([a-z0-9-]+)`)

// flagsOf builds a command and returns the flags its --help lists.
func flagsOf(t *testing.T, root, cmd string) map[string]bool {
	t.Helper()
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

func TestBasesApplyAndMatchTheBinaries(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, c := range []struct{ base, cmd string }{{"manager", "fleetlb-manager"}, {"ccm", "fleetlb-ccm"}} {
		t.Run(c.base, func(t *testing.T) {
			dir := filepath.Join(root, "deploy", c.base)
			manifests := render(t, env, dir)
			// The real apiserver validates every object (schema, CRDs, RBAC objects).
			if out, err := env.Kubectl(ctx, "apply", "--server-side", "--force-conflicts", "-k", dir); err != nil {
				t.Fatalf("apply: %v\n%s", err, out)
			}
			dep := deployment(t, manifests)
			var live appsv1.Deployment
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(dep), &live); err != nil {
				t.Fatalf("%s not applied: %v", dep.Name, err)
			}
			flags := flagsOf(t, root, c.cmd)
			for _, a := range dep.Spec.Template.Spec.Containers[0].Args {
				name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
				if !strings.HasPrefix(a, "--") || !flags[name] {
					t.Errorf("%s passes %q, which %s does not accept", c.base, a, c.cmd)
				}
			}
			if img := dep.Spec.Template.Spec.Containers[0].Image; !strings.HasSuffix(img, "/"+c.cmd+":latest") {
				t.Errorf("image %q was not replaced by the kustomization's images entry", img)
			}
		})
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
	// No wildcard anywhere in the manager's rules.
	roles := 0
	for _, doc := range bytes.Split(render(t, env, filepath.Join(root, "deploy", "manager")), []byte("\n---\n")) {
		var cr rbacv1.ClusterRole
		if err := yaml.Unmarshal(doc, &cr); err != nil || (cr.Kind != "ClusterRole" && cr.Kind != "Role") {
			continue
		}
		roles++
		for _, rule := range cr.Rules {
			if slices.Contains(rule.Verbs, "*") || slices.Contains(rule.Resources, "*") || slices.Contains(rule.APIGroups, "*") {
				t.Errorf("%s %s has a wildcard rule: %+v", cr.Kind, cr.Name, rule)
			}
		}
	}
	if roles < 2 {
		t.Errorf("found %d roles in the manager base", roles)
	}
	// The tenant policies are part of the base (they are tested in manager/tenant).
	for _, name := range []string{"fleetlb-tenant-secrets", "fleetlb-tenant-finalizers"} {
		if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}); err != nil {
			t.Errorf("policy binding %s not applied: %v", name, err)
		}
	}
	// The ccm may store its renewed kubeconfig, in that one Secret only.
	ccm := "system:serviceaccount:fleetlb-system:fleetlb-ccm"
	for name, want := range map[string]bool{"fleetlb-management-kubeconfig": true, "another": false} {
		ra := authorizationv1.ResourceAttributes{Verb: "patch", Resource: "secrets", Namespace: "fleetlb-system", Name: name}
		if got := allowed(t, env, ccm, ra); got != want {
			t.Errorf("the ccm may patch Secret %s: %v, want %v", name, got, want)
		}
	}
	// And it can hand a tenant's ccm its Role (RBAC refuses to grant what the granter lacks).
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
