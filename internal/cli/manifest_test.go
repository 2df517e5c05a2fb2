package cli

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	"github.com/fleetlb/fleetlb/internal/testenv"
)

// TestCompiledManifestIsCurrent runs the source command of manifest.go's
// go:generate line and compares its output with the compiled-in manifest.
func TestCompiledManifestIsCurrent(t *testing.T) {
	if _, err := testenv.AssetsDir(); err != nil { // the source renders with bin/k8s/kubectl
		t.Fatal(err)
	}
	src, err := os.ReadFile("manifest.go")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^//go:generate sh -c "(.+) > manifests/fleetlb-ccm\.yaml"$`).FindSubmatch(src)
	if m == nil {
		t.Fatal("manifest.go has no go:generate line of the form sh -c \"SOURCE > manifests/fleetlb-ccm.yaml\"")
	}
	want, err := exec.Command("sh", "-c", string(m[1])).Output()
	if err != nil {
		t.Fatalf("%s: %v", m[1], err)
	}
	if !bytes.Equal(want, defaultCCMManifest) {
		t.Fatalf("internal/cli/manifests/fleetlb-ccm.yaml is not what %s renders: run go generate ./internal/cli", m[1])
	}
}

func TestCCMManifestGetsTheClusterName(t *testing.T) {
	m, err := loadCCMManifest("", "team-x", "registry.example.com/fleetlb-ccm:v1")
	if err != nil {
		t.Fatal(err)
	}
	if want := (types.NamespacedName{Namespace: "fleetlb-system", Name: "fleetlb-management-kubeconfig"}); m.secret != want {
		t.Errorf("kubeconfig Secret %s, want %s", m.secret, want)
	}
	var d appsv1.Deployment
	for _, o := range m.objects {
		if o.GetKind() == "Deployment" {
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &d); err != nil {
				t.Fatal(err)
			}
		}
	}
	c := d.Spec.Template.Spec.Containers[0]
	args := strings.Join(c.Args, " ")
	if !strings.Contains(args, "--cluster-name=team-x") || strings.Count(args, "--cluster-name") != 1 || c.Image != "registry.example.com/fleetlb-ccm:v1" {
		t.Errorf("ccm container: image %s, args %s", c.Image, args)
	}
	if len(d.Spec.Template.Spec.Volumes) != 2 {
		t.Errorf("volumes %+v", d.Spec.Template.Spec.Volumes)
	}

	bad := strings.ReplaceAll(string(defaultCCMManifest), ccmSecretFlag, "--something-else")
	if _, err := loadFrom([]byte(bad), "team-x"); err == nil || !strings.Contains(err.Error(), ccmSecretFlag) {
		t.Errorf("a manifest whose ccm names no kubeconfig Secret: err = %v", err)
	}
}

func loadFrom(data []byte, cluster string) (*ccmManifest, error) {
	saved := defaultCCMManifest
	defer func() { defaultCCMManifest = saved }()
	defaultCCMManifest = data
	return loadCCMManifest("", cluster, "")
}

// TestInstallIsIdempotent applies the ccm's manifest to a real apiserver
// twice: the second apply changes nothing, and says so.
func TestInstallIsIdempotent(t *testing.T) {
	env := testenv.Start(t, testenv.Options{NoCRDs: true})
	m, err := loadCCMManifest("", "team-x", "")
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := rest.HTTPClientFor(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	mapper, err := apiutil.NewDynamicRESTMapper(env.Config, hc)
	if err != nil {
		t.Fatal(err)
	}
	a := &applier{dyn: dyn, mapper: mapper}
	ctx := context.Background()
	for round, want := range []string{created, unchanged} {
		for _, o := range m.objects {
			got, err := a.apply(ctx, o.DeepCopy())
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("apply #%d of %s %s: %s, want %s", round+1, o.GetKind(), objectName(o), got, want)
			}
		}
	}
	// A changed manifest is applied as a change.
	m2, err := loadCCMManifest("", "team-y", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range m2.objects {
		if o.GetKind() == "Deployment" {
			if got, err := a.apply(ctx, o); err != nil || got != configured {
				t.Errorf("apply with another cluster name: %s, %v; want configured", got, err)
			}
		}
	}
}
