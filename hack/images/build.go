package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

const versionPkg = "github.com/fleetlb/fleetlb/internal/version"

// goBuild builds ./cmd/<binary> of the module in moduleDir for one platform into
// outDir/<binary>: static (no cgo), paths trimmed, symbols stripped, no VCS
// stamp (the revision comes from meta), so the bytes depend only on the source,
// the Go toolchain and meta.
func goBuild(moduleDir, outDir string, platform v1.Platform, meta metadata, binaries ...string) error {
	ldflags := strings.Join([]string{
		"-s", "-w",
		"-X", versionPkg + ".Version=" + meta.Version,
		"-X", versionPkg + ".Revision=" + meta.Revision,
	}, " ")
	args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", outDir + string(filepath.Separator)}
	for _, b := range binaries {
		args = append(args, "./cmd/"+b)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+platform.OS, "GOARCH="+platform.Architecture)
	if platform.Architecture == "arm" && platform.Variant != "" {
		cmd.Env = append(cmd.Env, "GOARM="+strings.TrimPrefix(platform.Variant, "v"))
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build for %s: %w", platform, err)
	}
	return nil
}
