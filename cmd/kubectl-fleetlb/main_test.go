package main

import (
	"bytes"
	"testing"

	"github.com/fleetlb/fleetlb/internal/version"
)

// --version prints the stamped version and runs no command.
func TestVersionFlag(t *testing.T) {
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"--version"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if want := "kubectl fleetlb version " + version.String() + "\n"; out.String() != want {
		t.Errorf("--version printed %q, want %q", out.String(), want)
	}
}
