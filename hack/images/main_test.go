package main

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

var (
	testMeta = metadata{
		Version:  "v0.0.0-test",
		Revision: "0123456789abcdef0123456789abcdef01234567",
		Source:   "https://github.com/fleetlb/fleetlb",
		Created:  time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
	bothPlatforms = []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}
	allBinaries   = []string{"fleetlb-manager", "fleetlb-ccm", "fleetlb-proxy"}
)

// fakeExes stands in for go build: distinct bytes per binary and platform, so a
// mix-up between them shows.
func fakeExes(binary string, platforms []v1.Platform) [][]byte {
	var exes [][]byte
	for _, p := range platforms {
		exes = append(exes, []byte(fmt.Sprintf("not really %s for %s", binary, p)))
	}
	return exes
}

// writeTestLayout assembles and writes binary's layout into a new directory and
// returns the image index read back from disk.
func writeTestLayout(t *testing.T, binary string, platforms []v1.Platform, exes [][]byte, meta metadata) (string, v1.ImageIndex) {
	t.Helper()
	idx, err := newIndex(binary, platforms, exes, meta)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), binary)
	if err := writeLayout(dir, idx, meta.Version); err != nil {
		t.Fatal(err)
	}
	return dir, readLayout(t, dir, meta.Version)
}

// readLayout reads a layout as another tool would: index.json holds one image
// index tagged with the version.
func readLayout(t *testing.T, dir, tag string) v1.ImageIndex {
	t.Helper()
	outer, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	om, err := outer.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(om.Manifests) != 1 {
		t.Fatalf("index.json has %d entries, want 1", len(om.Manifests))
	}
	d := om.Manifests[0]
	if d.MediaType != types.OCIImageIndex || d.Annotations[labelRefName] != tag {
		t.Fatalf("index.json entry: media type %s, ref.name %q; want an OCI image index tagged %q", d.MediaType, d.Annotations[labelRefName], tag)
	}
	idx, err := outer.ImageIndex(d.Digest)
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

type layerFile struct {
	hdr  tar.Header
	body []byte
}

func layerFiles(t *testing.T, img v1.Image) []layerFile {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	if mt, _ := layers[0].MediaType(); mt != types.OCILayer {
		t.Errorf("layer media type %s, want %s", mt, types.OCILayer)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var files []layerFile
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, layerFile{hdr: *h, body: body})
	}
}

func TestImageOfEveryBinary(t *testing.T) {
	for _, binary := range allBinaries {
		t.Run(binary, func(t *testing.T) {
			exes := fakeExes(binary, bothPlatforms)
			_, idx := writeTestLayout(t, binary, bothPlatforms, exes, testMeta)

			im, err := idx.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			if im.MediaType != types.OCIImageIndex {
				t.Errorf("index media type %s, want %s", im.MediaType, types.OCIImageIndex)
			}
			if got := im.Annotations[labelRevision]; got != testMeta.Revision {
				t.Errorf("index annotation %s = %q, want %q", labelRevision, got, testMeta.Revision)
			}
			if len(im.Manifests) != len(bothPlatforms) {
				t.Fatalf("%d manifests in the index, want %d", len(im.Manifests), len(bothPlatforms))
			}
			for i, desc := range im.Manifests {
				want := bothPlatforms[i]
				if desc.Platform == nil || !desc.Platform.Equals(want) {
					t.Errorf("manifest %d: platform %v, want %v", i, desc.Platform, want)
				}
				img, err := idx.Image(desc.Digest)
				if err != nil {
					t.Fatal(err)
				}
				checkImage(t, img, binary, want, exes[i])
			}
		})
	}
}

func checkImage(t *testing.T, img v1.Image, binary string, platform v1.Platform, exe []byte) {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON {
		t.Errorf("manifest %s with config %s, want OCI", m.MediaType, m.Config.MediaType)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != platform.OS || cf.Architecture != platform.Architecture {
		t.Errorf("config platform %s/%s, want %s", cf.OS, cf.Architecture, platform)
	}
	if !cf.Created.Time.Equal(testMeta.Created) {
		t.Errorf("config created %v, want the commit time %v", cf.Created, testMeta.Created)
	}
	if cf.Config.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532", cf.Config.User)
	}
	if want := "/usr/local/bin/" + binary; len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != want || len(cf.Config.Cmd) != 0 {
		t.Errorf("entrypoint %q cmd %q, want [%s] and no cmd", cf.Config.Entrypoint, cf.Config.Cmd, want)
	}
	for k, want := range map[string]string{
		"org.opencontainers.image.version":  testMeta.Version,
		"org.opencontainers.image.revision": testMeta.Revision,
		"org.opencontainers.image.source":   testMeta.Source,
		"org.opencontainers.image.created":  "2026-01-02T03:04:05Z",
		"org.opencontainers.image.title":    binary,
	} {
		if got := cf.Config.Labels[k]; got != want {
			t.Errorf("label %s = %q, want %q", k, got, want)
		}
	}

	files := layerFiles(t, img)
	var names []string
	found := map[string]layerFile{}
	for _, f := range files {
		names = append(names, f.hdr.Name)
		found[f.hdr.Name] = f
		if !f.hdr.ModTime.Equal(testMeta.Created) {
			t.Errorf("%s: mtime %v, want the commit time", f.hdr.Name, f.hdr.ModTime)
		}
		if f.hdr.Name != "home/nonroot/" && (f.hdr.Uid != 0 || f.hdr.Gid != 0) {
			t.Errorf("%s owned by %d:%d, want root", f.hdr.Name, f.hdr.Uid, f.hdr.Gid)
		}
	}
	for i := 1; i < len(names); i++ {
		if names[i-1] >= names[i] {
			t.Errorf("layer entries not sorted: %q before %q", names[i-1], names[i])
		}
	}
	bin, ok := found["usr/local/bin/"+binary]
	if !ok {
		t.Fatalf("no usr/local/bin/%s in the layer; entries %q", binary, names)
	}
	if !bytes.Equal(bin.body, exe) || bin.hdr.Mode != 0o755 {
		t.Errorf("usr/local/bin/%s: mode %o, %d bytes; want mode 755 and the %d bytes built for %s", binary, bin.hdr.Mode, len(bin.body), len(exe), platform)
	}
	if p := found["etc/passwd"]; !strings.Contains(string(p.body), "nonroot:x:65532:65532:") {
		t.Errorf("etc/passwd does not name user 65532: %q", p.body)
	}
	if home := found["home/nonroot/"]; home.hdr.Uid != 65532 || home.hdr.Gid != 65532 {
		t.Errorf("home/nonroot owned by %d:%d, want 65532:65532", home.hdr.Uid, home.hdr.Gid)
	}
	if tmp := found["tmp/"]; tmp.hdr.Mode != 0o1777 {
		t.Errorf("tmp mode %o, want 1777", tmp.hdr.Mode)
	}
}

// dirFiles maps every file under dir to its bytes.
func dirFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		files[rel] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestSameInputSameBytes(t *testing.T) {
	const binary = "fleetlb-proxy"
	exes := fakeExes(binary, bothPlatforms)
	dirA, idxA := writeTestLayout(t, binary, bothPlatforms, exes, testMeta)
	dirB, idxB := writeTestLayout(t, binary, bothPlatforms, exes, testMeta)

	a, b := dirFiles(t, dirA), dirFiles(t, dirB)
	if len(a) != len(b) {
		t.Errorf("%d files in the first layout, %d in the second", len(a), len(b))
	}
	for name, ab := range a {
		if !bytes.Equal(ab, b[name]) {
			t.Errorf("%s differs between two builds of the same input", name)
		}
	}
	da, _ := idxA.Digest()
	db, _ := idxB.Digest()
	if da != db {
		t.Errorf("index digests %s and %s for the same input", da, db)
	}

	// The digest follows the input: another commit time gives another image.
	later := testMeta
	later.Created = testMeta.Created.Add(time.Second)
	_, idxC := writeTestLayout(t, binary, bothPlatforms, exes, later)
	if dc, _ := idxC.Digest(); dc == da {
		t.Errorf("index digest %s unchanged by another commit time", dc)
	}
}

// TestEntrypointRuns builds the real fleetlb-proxy for this machine the way
// make images does, puts it in an image, and runs the entrypoint extracted from
// the image's layer.
func TestEntrypointRuns(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the images are linux images")
	}
	const binary = "fleetlb-proxy"
	host := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	out := t.TempDir()
	if err := goBuild("../..", out, host, testMeta, binary); err != nil {
		t.Fatal(err)
	}
	exe, err := os.ReadFile(filepath.Join(out, binary))
	if err != nil {
		t.Fatal(err)
	}
	_, idx := writeTestLayout(t, binary, []v1.Platform{host}, [][]byte{exe}, testMeta)
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}

	// The image's flattened filesystem, as a runtime would unpack it.
	entry := strings.TrimPrefix(cf.Config.Entrypoint[0], "/")
	extracted := filepath.Join(t.TempDir(), binary)
	tr := tar.NewReader(mutate.Extract(img))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			t.Fatalf("entrypoint %s not in the image", entry)
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name != entry {
			continue
		}
		f, err := os.OpenFile(extracted, os.O_CREATE|os.O_WRONLY, fs.FileMode(h.Mode).Perm())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(f, tr); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		break
	}

	// Static and stripped: no program interpreter (dynamic loader), no symbol table.
	ef, err := elf.Open(extracted)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("entrypoint is dynamically linked (has PT_INTERP)")
		}
	}
	if ef.Section(".symtab") != nil {
		t.Error("entrypoint is not stripped (has .symtab)")
	}
	ef.Close()

	cmd := exec.Command(extracted, "--help")
	cmd.Env = []string{} // as in the image: nothing from this machine
	output, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s --help: %v\n%s", entry, err, output)
	}
	for _, want := range []string{"Usage of " + extracted, "-xds-address", "-fleet"} {
		if !strings.Contains(string(output), want) {
			t.Errorf("%s --help output lacks %q:\n%s", entry, want, output)
		}
	}

	// --version prints what the build stamped (-X of internal/version).
	cmd = exec.Command(extracted, "--version")
	cmd.Env = []string{}
	output, err = cmd.CombinedOutput()
	if want := "fleetlb-proxy " + testMeta.Version + " (" + testMeta.Revision + ")\n"; err != nil || string(output) != want {
		t.Errorf("%s --version: %v, output %q, want %q", entry, err, output, want)
	}
}

// TestPushToRegistry pushes a layout to a registry on loopback (the library's
// own in-memory registry) and reads it back: the registry serves the tag with
// the digest the build printed, and its images keep their config.
func TestPushToRegistry(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir()) // anonymous: no credentials of this machine
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	prefix := strings.TrimPrefix(srv.URL, "http://") + "/fleetlb"

	const binary = "fleetlb-ccm"
	exes := fakeExes(binary, bothPlatforms)
	dir, idx := writeTestLayout(t, binary, bothPlatforms, exes, testMeta)
	want, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if err := pushLayouts(context.Background(), filepath.Dir(dir), prefix, []string{binary}); err != nil {
		t.Fatal(err)
	}

	ref, err := name.NewTag(prefix + "/" + binary + ":" + testMeta.Version)
	if err != nil {
		t.Fatal(err)
	}
	pushed, err := remote.Index(ref)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := pushed.Digest(); got != want {
		t.Errorf("registry serves %s as %s, the layout's index is %s", ref, got, want)
	}
	im, err := pushed.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != len(bothPlatforms) {
		t.Fatalf("%d manifests pushed, want %d", len(im.Manifests), len(bothPlatforms))
	}
	for i, desc := range im.Manifests {
		img, err := pushed.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		checkImage(t, img, binary, bothPlatforms[i], exes[i])
	}
}
