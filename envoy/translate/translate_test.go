package translate

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/fleetlb/fleetlb/internal/model"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// toYAML renders resources stably: protojson's output varies its spacing on
// purpose, so it is re-encoded through sorted-key YAML.
func toYAML(t *testing.T, rs []types.Resource) string {
	t.Helper()
	var docs []any
	for _, r := range rs {
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(r.(proto.Message))
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		docs = append(docs, v)
	}
	out, err := yaml.Marshal(docs)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func loadModel(t *testing.T, path string) *model.Fleet {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f model.Fleet
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &f
}

func checkGolden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if got == "" {
			_ = os.Remove(path)
			return
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		want, err = nil, nil
	}
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(string(want), got); d != "" {
		t.Errorf("%s differs (-want +got), run `go test ./envoy/translate -update` if the change is intended:\n%s", path, d)
	}
}

func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(inputs) < 30 {
		t.Fatalf("only %d golden cases", len(inputs))
	}
	for _, in := range inputs {
		base := strings.TrimSuffix(in, ".in.yaml")
		t.Run(filepath.Base(base), func(t *testing.T) {
			f := loadModel(t, in)
			out, err := Translate(f)
			errText := ""
			if err != nil {
				errText = err.Error() + "\n"
			}
			checkGolden(t, base+".error.txt", errText)
			if err != nil {
				for _, typ := range []string{"listeners", "routes", "clusters", "endpoints", "secrets"} {
					checkGolden(t, base+"."+typ+".yaml", "")
				}
				return
			}
			snap, err := cachev3.NewSnapshot("golden", out.ByType())
			if err != nil {
				t.Fatal(err)
			}
			if err := snap.Consistent(); err != nil {
				t.Fatalf("snapshot is not consistent: %v", err)
			}
			for typ, rs := range map[string][]types.Resource{
				"listeners": out.Listeners, "routes": out.Routes, "clusters": out.Clusters,
				"endpoints": out.Endpoints, "secrets": out.Secrets,
			} {
				got := ""
				if len(rs) > 0 {
					got = toYAML(t, rs)
				}
				checkGolden(t, base+"."+typ+".yaml", got)
			}
			// Pure: a second translation is identical, resource for resource.
			again, err := Translate(f)
			if err != nil {
				t.Fatal(err)
			}
			for typ, pair := range map[string][2][]types.Resource{
				"listeners": {out.Listeners, again.Listeners}, "clusters": {out.Clusters, again.Clusters},
				"routes": {out.Routes, again.Routes}, "endpoints": {out.Endpoints, again.Endpoints},
			} {
				for i := range pair[0] {
					a, _ := proto.MarshalOptions{Deterministic: true}.Marshal(pair[0][i].(proto.Message))
					b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(pair[1][i].(proto.Message))
					if string(a) != string(b) {
						t.Fatalf("%s[%d] differs between two translations of the same model", typ, i)
					}
				}
			}
		})
	}
}
