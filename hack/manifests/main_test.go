package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/fleetlb/fleetlb/internal/testenv"
)

// The files `make manifests` writes are in the tree as it would write them:
// the plain manifests match the charts, the chart's copies match deploy/observability.
func TestManifestsInSync(t *testing.T) {
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	for dst, src := range copies {
		want, err := os.ReadFile(filepath.Join(root, src))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(root, dst))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s differs from %s (%v): run `make manifests`", dst, src, err)
		}
	}
	files, err := Generated(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(copies)+len(manifests) {
		t.Fatalf("generated %d files", len(files))
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(root, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s is not what the charts render (%v): run `make manifests`", name, err)
		}
	}
}

// run writes into a tree what Generated returns, and a second run changes nothing.
func TestRunWritesTheTree(t *testing.T) {
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	for _, dir := range []string{"deploy/charts", "deploy/observability"} {
		if err := os.CopyFS(filepath.Join(tmp, dir), os.DirFS(filepath.Join(root, dir))); err != nil {
			t.Fatal(err)
		}
	}
	// A stale copy and a missing manifest are rewritten.
	if err := os.WriteFile(filepath.Join(tmp, "deploy/charts/fleetlb/files/prometheus-rules.yaml"), []byte("groups: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(tmp); err != nil {
		t.Fatal(err)
	}
	files, err := Generated(root)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(tmp, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s after run differs from the tree's (%v)", name, err)
		}
	}
}
