// Package fasthealth lets tests of failover run in milliseconds: an admitted
// health check probes at most once a second (model.Validate refuses faster
// ones, since every proxy probes every endpoint at that rate), so tests
// translate with 1 s and then set the interval they asked for on the Envoy
// clusters. Only tests import it.
package fasthealth

import (
	"slices"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/fleetlb/fleetlb/envoy/translate"
	"github.com/fleetlb/fleetlb/internal/model"
)

// Translate is translate.Translate for a model whose health checks may probe
// faster than once a second.
func Translate(f *model.Fleet) (*translate.Output, error) {
	fast := map[string]time.Duration{}
	g := *f
	g.Backends = slices.Clone(f.Backends)
	for i := range g.Backends {
		b := &g.Backends[i]
		if hc := b.HealthCheck; hc != nil && hc.Interval != 0 && hc.Interval.D() < time.Second {
			fast[b.Name] = hc.Interval.D()
			slow := *hc
			slow.Interval = model.Duration(time.Second)
			b.HealthCheck = &slow
		}
	}
	out, err := translate.Translate(&g)
	if err != nil {
		return nil, err
	}
	for _, r := range out.Clusters {
		c := r.(*clusterv3.Cluster)
		if d, ok := fast[c.Name]; ok {
			for _, hc := range c.HealthChecks {
				// Every interval the translator derives from the interval, and no jitter.
				hc.Interval, hc.UnhealthyInterval, hc.UnhealthyEdgeInterval = durationpb.New(d), durationpb.New(d), durationpb.New(d)
				hc.HealthyEdgeInterval, hc.NoTrafficInterval, hc.IntervalJitter = durationpb.New(d), durationpb.New(d), nil
				if hc.NoTrafficHealthyInterval != nil {
					hc.NoTrafficHealthyInterval = durationpb.New(d)
				}
			}
		}
	}
	return out, nil
}
