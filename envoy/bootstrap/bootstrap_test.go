package bootstrap

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
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

// checkSDS parses a file-based SDS source back and validates its secret.
func checkSDS(t *testing.T, y []byte) {
	t.Helper()
	js, err := yaml.YAMLToJSON(y)
	if err != nil {
		t.Fatal(err)
	}
	var r discoveryv3.DiscoveryResponse
	if err := protojson.Unmarshal(js, &r); err != nil {
		t.Fatalf("SDS file does not parse: %v", err)
	}
	if len(r.Resources) != 1 {
		t.Fatalf("SDS file has %d resources, want 1", len(r.Resources))
	}
	var s tlsv3.Secret
	if err := r.Resources[0].UnmarshalTo(&s); err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(); err != nil {
		t.Fatalf("SDS secret %s does not validate: %v", s.Name, err)
	}
}

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestGolden(t *testing.T) {
	inputs, _ := filepath.Glob("testdata/*.in.yaml")
	if len(inputs) < 6 {
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
			files, err := Files(o)
			got := files[BootstrapFile]
			golden, other := base+".out.yaml", base+".error.txt"
			if err != nil {
				got, golden, other, files = []byte(err.Error()+"\n"), base+".error.txt", base+".out.yaml", nil
			}
			// The SDS files next to the bootstrap have goldens of their own: <case>.<file>.
			sds, _ := filepath.Glob(base + ".xds-*.yaml")
			if *update {
				_ = os.Remove(other)
				for _, f := range sds {
					_ = os.Remove(f)
				}
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				for name, b := range files {
					if name != BootstrapFile {
						if err := os.WriteFile(base+"."+name, b, 0o644); err != nil {
							t.Fatal(err)
						}
					}
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
			if len(files) > 0 && len(sds) != len(files)-1 {
				t.Errorf("%d SDS files, %d goldens (run `go test ./envoy/bootstrap -update`)", len(files)-1, len(sds))
			}
			for _, f := range sds {
				want, _ := os.ReadFile(f)
				name := strings.TrimPrefix(f, base+".")
				if d := cmp.Diff(string(want), string(files[name])); d != "" {
					t.Errorf("%s differs (-want +got):\n%s", f, d)
				}
				checkSDS(t, files[name])
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
				if b.Admin.GetAddress().GetPipe() == nil {
					t.Fatalf("admin listens on %v, want a Unix socket", b.Admin.GetAddress())
				}
				ts := b.StaticResources.Clusters[0].GetTransportSocket()
				if (ts != nil) != (o.TLSDir != "") {
					t.Fatalf("xds cluster transport socket %v with tlsDir %q", ts, o.TLSDir)
				}
			}
		})
	}
}
