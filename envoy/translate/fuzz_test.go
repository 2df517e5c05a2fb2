package translate

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/go-logr/logr"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/fleetlb/fleetlb/internal/model"
	"github.com/fleetlb/fleetlb/internal/proxy/l4"
	"github.com/fleetlb/fleetlb/internal/proxy/l7"
	"github.com/fleetlb/fleetlb/internal/proxy/upstream"
)

type noUpstreams struct{}

func (noUpstreams) PickFor(string, []byte, *upstream.Selection) (upstream.Attempt, error) {
	return upstream.Attempt{}, fmt.Errorf("none")
}
func (noUpstreams) Report(string, string, bool)       {}
func (noUpstreams) ReportStatus(string, string, int)  {}
func (noUpstreams) StartRetry(string) (func(), error) { return nil, fmt.Errorf("none") }
func (noUpstreams) Transport(string) (http.RoundTripper, error) {
	return nil, fmt.Errorf("none")
}
func (noUpstreams) StartRequest(string) (func(), error) { return func() {}, nil }

// proxyAccepts applies fleetlb-proxy's own checks to every resource, as its
// core does before it ACKs (internal/proxy: handle, applyListeners): the
// error is what it would NACK with.
func proxyAccepts(out *Output) error {
	for _, r := range out.Clusters {
		if err := upstream.ValidateCluster(r.(*clusterv3.Cluster)); err != nil {
			return err
		}
	}
	for _, r := range out.Endpoints {
		if err := upstream.ValidateLoadAssignment(r.(*endpointv3.ClusterLoadAssignment)); err != nil {
			return err
		}
	}
	set := l7.NewSet(noUpstreams{})
	seen := map[string]string{}
	for _, r := range out.Listeners {
		l := r.(*listenerv3.Listener)
		if _, err := l4.Address(l); err != nil {
			return err
		}
		if set.IsHTTPListener(l) {
			srv, err := set.NewListener(l, logr.Discard())
			if err != nil {
				return err
			}
			srv.Close()
		} else if err := l4.ValidateListener(l); err != nil {
			return err
		}
		key := fmt.Sprintf("%v/%s", l4.IsUDPListener(l), l.GetAddress().GetSocketAddress())
		if other, dup := seen[key]; dup {
			return fmt.Errorf("listener %q: address is already used by listener %q", l.GetName(), other)
		}
		seen[key] = l.GetName()
	}
	var rcs []*routev3.RouteConfiguration
	for _, r := range out.Routes {
		rcs = append(rcs, r.(*routev3.RouteConfiguration))
	}
	if err := set.SetRouteConfigs(rcs); err != nil {
		return err
	}
	var ss []*tlsv3.Secret
	for _, r := range out.Secrets {
		ss = append(ss, r.(*tlsv3.Secret))
	}
	return set.SetSecrets(ss)
}

// FuzzTranslate holds "admitted ⇒ accepted" at the model: whatever
// model.Validate accepts translates, every resource passes its own Validate()
// and proto encoding, the snapshot is Consistent(), and fleetlb-proxy's own
// validation accepts every resource (no NACK). Seeds are the golden models
// and the known attacks (which Validate must refuse).
func FuzzTranslate(f *testing.F) {
	inputs, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, in := range inputs {
		b, err := os.ReadFile(in)
		if err != nil {
			f.Fatal(err)
		}
		j, err := yaml.YAMLToJSON(b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(j)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var m model.Fleet
		if json.Unmarshal(data, &m) != nil || m.Validate() != nil {
			return
		}
		out, err := Translate(&m)
		if err != nil {
			t.Fatalf("a valid model does not translate: %v", err)
		}
		snap, err := cachev3.NewSnapshot("fuzz", out.ByType())
		if err != nil {
			t.Fatal(err)
		}
		if err := snap.Consistent(); err != nil {
			t.Fatalf("snapshot of a valid model is not consistent: %v", err)
		}
		for _, list := range [][]any{anys(out.Listeners), anys(out.Routes), anys(out.Clusters), anys(out.Endpoints), anys(out.Secrets)} {
			for _, r := range list {
				if _, err := proto.Marshal(r.(proto.Message)); err != nil {
					t.Fatalf("resource of a valid model cannot be encoded: %v", err)
				}
			}
		}
		if err := proxyAccepts(out); err != nil {
			t.Fatalf("fleetlb-proxy would NACK a valid model: %v", err)
		}
		// The certificates the proxy loads are the ones Envoy would (Validate checked the key).
		for _, c := range m.Certificates {
			if _, err := tls.X509KeyPair([]byte(c.CertPEM), []byte(c.KeyPEM)); err != nil {
				t.Fatalf("certificate %s: %v", c.Name, err)
			}
		}
	})
}

func anys[T any](in []T) []any {
	out := make([]any, len(in))
	for i, v := range in {
		out[i] = v
	}
	return out
}
