package bootstrap

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	// Register every type the bootstrap packs into an Any, so protojson can read it back.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/fixed_heap/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	_ "github.com/envoyproxy/go-control-plane/pkg/wellknown"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestGolden(t *testing.T) {
	inputs, _ := filepath.Glob("testdata/*.in.yaml")
	if len(inputs) < 5 {
		t.Fatalf("only %d golden cases", len(inputs))
	}
	for _, in := range inputs {
		base := strings.TrimSuffix(in, ".in.yaml")
		t.Run(filepath.Base(base), func(t *testing.T) {
			raw, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			var o Options
			if err := yaml.UnmarshalStrict(raw, &o); err != nil {
				t.Fatal(err)
			}
			got, err := YAML(o)
			golden, other := base+".out.yaml", base+".error.txt"
			if err != nil {
				got, golden, other = []byte(err.Error()+"\n"), base+".error.txt", base+".out.yaml"
			}
			if *update {
				_ = os.Remove(other)
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run `go test ./envoy/bootstrap -update`)", err)
			}
			if d := cmp.Diff(string(want), string(got)); d != "" {
				t.Errorf("%s differs (-want +got):\n%s", golden, d)
			}
			if strings.HasSuffix(golden, ".out.yaml") {
				// What Envoy reads must parse back into the bootstrap proto and validate.
				js, err := yaml.YAMLToJSON(got)
				if err != nil {
					t.Fatal(err)
				}
				var b bootstrapv3.Bootstrap
				if err := protojson.Unmarshal(js, &b); err != nil {
					t.Fatalf("YAML does not parse back: %v", err)
				}
				if err := b.Validate(); err != nil {
					t.Fatalf("parsed bootstrap does not validate: %v", err)
				}
				if b.Node.Cluster != o.Fleet {
					t.Fatalf("node.cluster %q, want the fleet %q", b.Node.Cluster, o.Fleet)
				}
			}
		})
	}
}
