// Package testenv starts real control planes (kube-apiserver + etcd through
// controller-runtime's envtest) with the fleetlb CRDs installed, for tests.
//
// The binaries come from KUBEBUILDER_ASSETS, or <module root>/bin/k8s, where
// `make tools` puts them. Missing binaries are an error, never a skip: a test
// that silently does not run proves nothing.
package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	fleetscheme "github.com/fleetlb/fleetlb/internal/scheme"
)

// Env is one running control plane.
type Env struct {
	// Config reaches the apiserver as an administrator.
	Config *rest.Config
	// Client is a controller-runtime client with Scheme.
	Client client.Client
	// Scheme knows the core Kubernetes types and fleetlb.io.
	Scheme *runtime.Scheme
	// Kubeconfig is the path of an administrator kubeconfig file for kubectl.
	Kubeconfig string
	// Assets is the directory with kube-apiserver, etcd and kubectl.
	Assets string

	env *envtest.Environment
	dir string
}

// Options change what Start installs.
type Options struct {
	// NoCRDs starts a bare control plane (for example a tenant cluster).
	NoCRDs bool
	// ExtraCRDDirs are installed too (cert-manager, Gateway API, ...).
	ExtraCRDDirs []string
}

// ModuleRoot is the directory of the fleetlb go.mod, found from the working directory up.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/fleetlb/fleetlb\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("testenv: cannot find the fleetlb module root (go.mod) above the working directory")
		}
		dir = parent
	}
}

// AssetsDir finds the control-plane binaries or says how to build them.
func AssetsDir() (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		root, err := ModuleRoot()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(root, "bin", "k8s")
	}
	for _, b := range []string{"kube-apiserver", "etcd", "kubectl"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("testenv: %s not found in %s: run `make tools` first (builds kube-apiserver, etcd and kubectl into bin/k8s)", b, dir)
		}
	}
	return dir, nil
}

// New starts a control plane. Call Stop when done.
func New(opts Options) (*Env, error) {
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	var crdDirs []string
	if !opts.NoCRDs {
		root, err := ModuleRoot()
		if err != nil {
			return nil, err
		}
		crdDirs = append(crdDirs, filepath.Join(root, "deploy", "charts", "fleetlb", "crds"))
	}
	crdDirs = append(crdDirs, opts.ExtraCRDDirs...)
	scheme := fleetscheme.New()
	te := &envtest.Environment{
		BinaryAssetsDirectory:    assets,
		CRDDirectoryPaths:        crdDirs,
		ErrorIfCRDPathMissing:    true,
		Scheme:                   scheme,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
	}
	cfg, err := te.Start()
	if err != nil {
		// Start may fail after the processes are up (a CRD that does not
		// install): stop them rather than leak a kube-apiserver and etcd.
		_ = te.Stop()
		return nil, fmt.Errorf("testenv: starting the control plane from %s: %w", assets, err)
	}
	e := &Env{Config: cfg, Scheme: scheme, Assets: assets, env: te}
	if e.Client, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		_ = e.Stop()
		return nil, err
	}
	if e.dir, err = os.MkdirTemp("", "fleetlb-testenv-"); err != nil {
		_ = e.Stop()
		return nil, err
	}
	user, err := te.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		_ = e.Stop()
		return nil, fmt.Errorf("testenv: admin user: %w", err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		_ = e.Stop()
		return nil, err
	}
	e.Kubeconfig = filepath.Join(e.dir, "kubeconfig")
	if err := os.WriteFile(e.Kubeconfig, kc, 0o600); err != nil {
		_ = e.Stop()
		return nil, err
	}
	return e, nil
}

// Start starts a control plane for one test and stops it when the test ends.
func Start(t testing.TB, opts Options) *Env {
	t.Helper()
	e, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
	})
	return e
}

// Stop stops the control plane and removes its files.
func (e *Env) Stop() error {
	err := e.env.Stop()
	if e.dir != "" {
		err = errors.Join(err, os.RemoveAll(e.dir))
	}
	return err
}

// Kubectl runs the real kubectl against this control plane and returns its
// combined output. It is bounded by a one-minute timeout.
func (e *Env) Kubectl(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(e.Assets, "kubectl"), append([]string{"--kubeconfig", e.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %v: %w\n%s", args, err, out)
	}
	return string(out), nil
}
