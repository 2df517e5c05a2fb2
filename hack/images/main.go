// Command images builds the OCI images of fleetlb's binaries without Docker
// (make images) and pushes them (make push).
//
//	go run ./hack/images -out bin/images -version v0.1.0 -revision <sha> -source-date-epoch <unix> fleetlb-manager ...
//	go run ./hack/images -out bin/images -push registry.example.com/fleetlb fleetlb-manager ...
//
// Each binary becomes an OCI layout in <out>/<binary>: an image index with one
// image per platform, each a single layer holding the static binary, run as
// 65532:65532. Everything is derived from the source and the flags (file times
// are the commit time), so the same commit gives the same digests.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func main() {
	var (
		out       = flag.String("out", "bin/images", "directory of the OCI layouts, one per binary")
		platforms = flag.String("platforms", "linux/amd64,linux/arm64", "comma-separated os/arch[/variant] to build")
		version   = flag.String("version", "dev", "org.opencontainers.image.version label, the layout's tag and internal/version.Version")
		revision  = flag.String("revision", "unknown", "org.opencontainers.image.revision label and internal/version.Revision: the commit")
		source    = flag.String("source", "https://github.com/fleetlb/fleetlb", "org.opencontainers.image.source label")
		epoch     = flag.Int64("source-date-epoch", 0, "commit time, unix seconds: every file's mtime and the images' created time")
		push      = flag.String("push", "", "instead of building, push the layouts in -out to this registry/repository prefix (<push>/<binary>:<tag>)")
	)
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: %s [flags] binary...\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	binaries := flag.Args()
	if len(binaries) == 0 {
		flag.Usage()
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var err error
	if *push != "" {
		err = pushLayouts(ctx, *out, *push, binaries)
	} else {
		meta := metadata{Version: *version, Revision: *revision, Source: *source, Created: time.Unix(*epoch, 0).UTC()}
		var ps []v1.Platform
		ps, err = parsePlatforms(*platforms)
		if err == nil {
			err = build(".", *out, ps, meta, binaries)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func parsePlatforms(s string) ([]v1.Platform, error) {
	var ps []v1.Platform
	for _, f := range strings.Split(s, ",") {
		p, err := v1.ParsePlatform(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		if p.OS == "" || p.Architecture == "" {
			return nil, fmt.Errorf("platform %q: want os/arch", f)
		}
		ps = append(ps, *p)
	}
	return ps, nil
}

// build compiles every binary for every platform and writes one layout per
// binary under out, then prints each index's digest and layer sizes.
func build(moduleDir, out string, platforms []v1.Platform, meta metadata, binaries []string) error {
	work, err := os.MkdirTemp("", "fleetlb-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	// exes[binary][i] is binary built for platforms[i].
	exes := map[string][][]byte{}
	for i, p := range platforms {
		dir := filepath.Join(work, fmt.Sprint(i))
		fmt.Fprintf(os.Stderr, "images: go build %s for %s\n", strings.Join(binaries, " "), p)
		if err := goBuild(moduleDir, dir, p, meta, binaries...); err != nil {
			return err
		}
		for _, b := range binaries {
			exe, err := os.ReadFile(filepath.Join(dir, b))
			if err != nil {
				return err
			}
			exes[b] = append(exes[b], exe)
		}
	}
	for _, b := range binaries {
		idx, err := newIndex(b, platforms, exes[b], meta)
		if err != nil {
			return err
		}
		if err := writeLayout(filepath.Join(out, b), idx, meta.Version); err != nil {
			return fmt.Errorf("%s: %w", b, err)
		}
		if err := printSummary(os.Stdout, filepath.Join(out, b), idx); err != nil {
			return err
		}
	}
	return nil
}

// printSummary prints "dir index-digest" and, per platform, the compressed and
// uncompressed size of its layer.
func printSummary(w *os.File, dir string, idx v1.ImageIndex) error {
	d, err := idx.Digest()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s %s\n", dir, d)
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	for _, desc := range im.Manifests {
		img, err := idx.Image(desc.Digest)
		if err != nil {
			return err
		}
		layers, err := img.Layers()
		if err != nil {
			return err
		}
		var compressed, uncompressed int64
		for _, l := range layers {
			n, err := l.Size()
			if err != nil {
				return err
			}
			compressed += n
			uncompressed += uncompressedSize(l)
		}
		fmt.Fprintf(w, "  %-14s %s  %.1f MiB compressed, %.1f MiB uncompressed\n",
			desc.Platform, desc.Digest, mib(compressed), mib(uncompressed))
	}
	return nil
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func uncompressedSize(l v1.Layer) int64 {
	rc, err := l.Uncompressed()
	if err != nil {
		return 0
	}
	defer rc.Close()
	n, _ := io.Copy(io.Discard, rc)
	return n
}
