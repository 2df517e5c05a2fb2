package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The user and group the images run as: "nonroot" of distroless, so volumes and
// securityContexts written for distroless images fit.
const (
	nonrootID = 65532
	user      = "65532:65532"
	binDir    = "usr/local/bin"
)

// OCI annotation keys, also used as config labels.
// https://github.com/opencontainers/image-spec/blob/main/annotations.md
const (
	labelTitle    = "org.opencontainers.image.title"
	labelVersion  = "org.opencontainers.image.version"
	labelRevision = "org.opencontainers.image.revision"
	labelSource   = "org.opencontainers.image.source"
	labelCreated  = "org.opencontainers.image.created"
	labelRefName  = "org.opencontainers.image.ref.name"
)

// metadata is what an image says about where it came from. Nothing in it may
// come from the clock or the machine: it is what makes two builds identical.
type metadata struct {
	Version  string
	Revision string
	Source   string
	// Created is the commit time; every file's mtime and the config's created.
	Created time.Time
}

func (m metadata) labels(binary string) map[string]string {
	return map[string]string{
		labelTitle:    binary,
		labelVersion:  m.Version,
		labelRevision: m.Revision,
		labelSource:   m.Source,
		labelCreated:  m.Created.UTC().Format(time.RFC3339),
	}
}

// entrypoint is where the binary lives in its image.
func entrypoint(binary string) string { return "/" + binDir + "/" + binary }

// layerTar is the image's only layer: the binary, /etc/passwd and /etc/group
// naming the nonroot user, and /tmp. Entries are sorted, owned by root, and
// stamped with created, so the same binary always gives the same bytes.
func layerTar(binary string, exe []byte, created time.Time) ([]byte, error) {
	const (
		passwd = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
		group  = "root:x:0:\nnonroot:x:65532:\n"
	)
	type entry struct {
		hdr  tar.Header
		body []byte
	}
	dir := func(name string, mode int64, uid int) entry {
		return entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, Uid: uid, Gid: uid}}
	}
	file := func(name string, mode int64, body []byte) entry {
		return entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body))}, body: body}
	}
	entries := []entry{
		dir("etc", 0o755, 0),
		file("etc/passwd", 0o644, []byte(passwd)),
		file("etc/group", 0o644, []byte(group)),
		dir("home", 0o755, 0),
		dir("home/nonroot", 0o700, nonrootID),
		dir("tmp", 0o1777, 0),
		dir("usr", 0o755, 0),
		dir("usr/local", 0o755, 0),
		dir(binDir, 0o755, 0),
		file(binDir+"/"+binary, 0o755, exe),
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].hdr.Name < entries[j].hdr.Name })

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		e.hdr.ModTime = created.UTC()
		e.hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(&e.hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// gzipBytes compresses once, with a zero gzip header (no name, no mtime).
func gzipBytes(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// newImage is the single-platform OCI image of one binary.
func newImage(binary string, exe []byte, platform v1.Platform, meta metadata) (v1.Image, error) {
	tarBytes, err := layerTar(binary, exe, meta.Created)
	if err != nil {
		return nil, err
	}
	gz, err := gzipBytes(tarBytes)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(gz)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	created := v1.Time{Time: meta.Created.UTC()}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: created, CreatedBy: "fleetlb hack/images", Comment: binary},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Created = created
	cf.OS = platform.OS
	cf.Architecture = platform.Architecture
	cf.Variant = platform.Variant
	cf.Config = v1.Config{
		User:       user,
		Entrypoint: []string{entrypoint(binary)},
		WorkingDir: "/",
		Labels:     meta.labels(binary),
	}
	return mutate.ConfigFile(img, cf)
}

// newIndex is the multi-platform image index of one binary; exes holds the
// binary built for each platform, in the order given.
func newIndex(binary string, platforms []v1.Platform, exes [][]byte, meta metadata) (v1.ImageIndex, error) {
	if len(platforms) != len(exes) {
		return nil, fmt.Errorf("%d platforms, %d binaries", len(platforms), len(exes))
	}
	var adds []mutate.IndexAddendum
	for i, p := range platforms {
		img, err := newImage(binary, exes[i], p, meta)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", binary, p, err)
		}
		p := p
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
	return mutate.Annotations(idx, meta.labels(binary)).(v1.ImageIndex), nil
}

// writeLayout replaces dir with an OCI layout holding idx, tagged with the
// version (ref.name), as skopeo, crane and containerd read it.
func writeLayout(dir string, idx v1.ImageIndex, tag string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	return p.AppendIndex(idx, layout.WithAnnotations(map[string]string{labelRefName: tag}))
}
