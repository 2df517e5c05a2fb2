package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// pushLayouts pushes each binary's image index, as written by build, to
// <registry>/<binary>:<tag>, the tag being the layout's ref.name (the version).
// Credentials come from the Docker config (~/.docker/config.json, credential
// helpers), as docker login or crane auth login leave them. The pushed bytes
// are the layout's, so the registry reports the digests build printed.
func pushLayouts(ctx context.Context, out, registry string, binaries []string) error {
	for _, b := range binaries {
		dir := filepath.Join(out, b)
		p, err := layout.FromPath(dir)
		if err != nil {
			return fmt.Errorf("%s: %w (run make images first)", b, err)
		}
		outer, err := p.ImageIndex()
		if err != nil {
			return err
		}
		im, err := outer.IndexManifest()
		if err != nil {
			return err
		}
		if len(im.Manifests) != 1 {
			return fmt.Errorf("%s: %d entries in index.json, want 1", dir, len(im.Manifests))
		}
		desc := im.Manifests[0]
		idx, err := outer.ImageIndex(desc.Digest)
		if err != nil {
			return err
		}
		ref, err := name.NewTag(registry + "/" + b + ":" + desc.Annotations[labelRefName])
		if err != nil {
			return err
		}
		if err := remote.WriteIndex(ref, idx, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
			return fmt.Errorf("push %s: %w", ref, err)
		}
		fmt.Printf("%s@%s\n", ref, desc.Digest)
	}
	return nil
}
