package cli

import (
	"bufio"
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// The ccm's install manifest compiled into the plugin (--manifest overrides
// it), rendered from the one source of install manifests by the command
// before " > " on the go:generate line; TestCompiledManifestIsCurrent runs
// that command too. The source is the fleetlb-ccm Helm chart rendered by
// make manifests.
//
//go:generate sh -c "cat ../../deploy/install/fleetlb-ccm.yaml > manifests/fleetlb-ccm.yaml"
//go:embed manifests/fleetlb-ccm.yaml
var defaultCCMManifest []byte

// Defaults of the ccm's Deployment when the manifest does not say otherwise.
const (
	ccmDeploymentName = "fleetlb-ccm"
	ccmContainerName  = "ccm"
	// ccmSecretFlag names, on the ccm's command line, the tenant-cluster
	// Secret its management kubeconfig is mounted from.
	ccmSecretFlag      = "--management-kubeconfig-secret"
	ccmClusterNameFlag = "--cluster-name"
)

// ccmManifest is the ccm's install manifest, ready to apply to a tenant cluster.
type ccmManifest struct {
	objects []*unstructured.Unstructured
	// secret is where the ccm reads its management kubeconfig (key "kubeconfig").
	secret types.NamespacedName
	// deployment is the ccm's Deployment.
	deployment types.NamespacedName
}

// loadCCMManifest reads the manifest at path ("" for the compiled-in one),
// sets the cluster name (and the image, when given) on the ccm's Deployment
// and finds the Secret it mounts its management kubeconfig from.
func loadCCMManifest(path, clusterName, image string) (*ccmManifest, error) {
	data := defaultCCMManifest
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		data = b
	}
	objs, err := decodeManifest(data)
	if err != nil {
		return nil, err
	}
	m := &ccmManifest{objects: objs}
	found := false
	for _, o := range objs {
		if o.GetKind() != "Deployment" || o.GetName() != ccmDeploymentName {
			continue
		}
		found = true
		m.deployment = types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()}
		if m.secret, err = configureCCM(o, clusterName, image); err != nil {
			return nil, fmt.Errorf("deployment %s: %w", ccmDeploymentName, err)
		}
	}
	if !found {
		return nil, fmt.Errorf("the manifest has no Deployment %s", ccmDeploymentName)
	}
	return m, nil
}

func decodeManifest(data []byte) ([]*unstructured.Unstructured, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []*unstructured.Unstructured
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := utilyaml.Unmarshal(doc, &u.Object); err != nil {
			return nil, err
		}
		if len(u.Object) == 0 {
			continue // a document of comments only
		}
		if u.GetKind() == "" || u.GetName() == "" {
			return nil, fmt.Errorf("a manifest document has no kind or name: %.80q", doc)
		}
		objs = append(objs, u)
	}
}

// configureCCM sets --cluster-name (and the image) on the ccm container and
// returns the Secret named by its --management-kubeconfig-secret flag.
func configureCCM(u *unstructured.Unstructured, clusterName, image string) (types.NamespacedName, error) {
	var d appsv1.Deployment
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &d); err != nil {
		return types.NamespacedName{}, err
	}
	i := slices.IndexFunc(d.Spec.Template.Spec.Containers, func(c corev1.Container) bool { return c.Name == ccmContainerName })
	if i < 0 {
		return types.NamespacedName{}, fmt.Errorf("no container %q", ccmContainerName)
	}
	c := &d.Spec.Template.Spec.Containers[i]
	c.Args = setFlag(c.Args, ccmClusterNameFlag, clusterName)
	if image != "" {
		c.Image = image
	}
	var secret types.NamespacedName
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, ccmSecretFlag+"="); ok {
			ns, name, _ := strings.Cut(v, "/")
			secret = types.NamespacedName{Namespace: ns, Name: name}
		}
	}
	if secret.Namespace == "" || secret.Name == "" {
		return secret, fmt.Errorf("container %q has no %s=namespace/name", ccmContainerName, ccmSecretFlag)
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&d)
	if err != nil {
		return secret, err
	}
	// The typed round trip adds empty status and creationTimestamp fields;
	// applying them would claim fields the plugin does not mean to own.
	unstructured.RemoveNestedField(obj, "status")
	unstructured.RemoveNestedField(obj, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(obj, "spec", "template", "metadata", "creationTimestamp")
	u.Object = obj
	return secret, nil
}

// setFlag replaces --name=... in args, or appends it.
func setFlag(args []string, name, value string) []string {
	out := slices.Clone(args)
	for i, a := range out {
		if a == name || strings.HasPrefix(a, name+"=") {
			out[i] = name + "=" + value
			return out
		}
	}
	return append(out, name+"="+value)
}
