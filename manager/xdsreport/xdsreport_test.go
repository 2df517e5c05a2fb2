package xdsreport

import (
	"context"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/fleetlb/fleetlb/internal/scheme"
)

type localXDS struct {
	version string
	gen     uint64
	proxies int
}

func (l *localXDS) Version(string) (string, uint64) { return l.version, l.gen }
func (l *localXDS) ConnectedProxies(string) int     { return l.proxies }

func report(replica, value string, renewed time.Time) *coordinationv1.Lease {
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: LeaseName(replica), Labels: map[string]string{Label: "true"},
			Annotations: map[string]string{annotationPrefix + "default": value}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(replica), RenewTime: ptr.To(metav1.NewMicroTime(renewed)), LeaseDurationSeconds: ptr.To(int32(45))},
	}
}

func TestAcked(t *testing.T) {
	now := time.Now()
	cases := []struct {
		name  string
		local localXDS
		own   uint64
		peers []*coordinationv1.Lease
		want  uint64
	}{
		{name: "alone: own acknowledgements", local: localXDS{"v2", 7, 1}, own: 7, want: 7},
		{name: "every proxy on a peer that runs the same version", local: localXDS{"v2", 7, 0}, own: 0,
			peers: []*coordinationv1.Lease{report("m2", "1 v2", now)}, want: 7},
		{name: "a peer's proxy not there yet", local: localXDS{"v2", 7, 1}, own: 7,
			peers: []*coordinationv1.Lease{report("m2", "1 -", now)}, want: 0},
		{name: "a peer on another version", local: localXDS{"v2", 7, 0}, own: 0,
			peers: []*coordinationv1.Lease{report("m2", "2 v1", now)}, want: 0},
		{name: "a peer without proxies does not count", local: localXDS{"v2", 7, 1}, own: 7,
			peers: []*coordinationv1.Lease{report("m2", "0 -", now)}, want: 7},
		{name: "a dead peer (not renewed) does not count", local: localXDS{"v2", 7, 1}, own: 7,
			peers: []*coordinationv1.Lease{report("m2", "1 v1", now.Add(-time.Minute))}, want: 7},
		{name: "our own report is not a peer", local: localXDS{"v2", 7, 1}, own: 7,
			peers: []*coordinationv1.Lease{report("self", "1 v1", now)}, want: 7},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := fake.NewClientBuilder().WithScheme(scheme.New())
			for _, p := range c.peers {
				b = b.WithObjects(p)
			}
			a := &Acks{Client: b.Build(), Namespace: "ns", Self: "self", XDS: &c.local}
			got, err := a.Acked(context.Background(), "default", c.own)
			if err != nil || got != c.want {
				t.Fatalf("Acked = %d, %v; want %d", got, err, c.want)
			}
		})
	}
}

func TestAckedNeverGoesBack(t *testing.T) {
	local := &localXDS{"v2", 7, 1}
	c := fake.NewClientBuilder().WithScheme(scheme.New()).Build()
	a := &Acks{Client: c, Namespace: "ns", Self: "self", XDS: local}
	if got, _ := a.Acked(context.Background(), "default", 7); got != 7 {
		t.Fatalf("Acked = %d, want 7", got)
	}
	// A peer with a proxy that lags joins: what was acknowledged stays so.
	if err := c.Create(context.Background(), report("m2", "1 -", time.Now())); err != nil {
		t.Fatal(err)
	}
	local.version, local.gen = "v3", 8
	if got, _ := a.Acked(context.Background(), "default", 8); got != 7 {
		t.Fatalf("Acked = %d, want 7 (not back to 0, not ahead to 8)", got)
	}
}

// reportingXDS is the xDS server's view for the Reporter.
type reportingXDS struct {
	localXDS
	onAcked   []func(string, uint64)
	onProxies []func(string)
}

func (r *reportingXDS) AckedGeneration(string) uint64   { return r.gen }
func (r *reportingXDS) OnAcked(f func(string, uint64))  { r.onAcked = append(r.onAcked, f) }
func (r *reportingXDS) OnProxiesChanged(f func(string)) { r.onProxies = append(r.onProxies, f) }

// TestReportNamesOnlyExistingFleets: a fleet that does not exist (deleted,
// or never was) is not named in the report Lease.
func TestReportNamesOnlyExistingFleets(t *testing.T) {
	x := &reportingXDS{localXDS: localXDS{"v1", 3, 1}}
	exists := map[string]bool{"a": true, "gone": true}
	r := &Reporter{XDS: x, FleetExists: func(f string) bool { return exists[f] }}
	r.Register()
	for _, f := range x.onProxies {
		f("a")
		f("gone")
	}
	if got := r.annotations(); len(got) != 2 {
		t.Fatalf("report %v, want fleets a and gone", got)
	}
	delete(exists, "gone")
	got := r.annotations()
	if _, ok := got[annotationPrefix+"gone"]; ok || got[annotationPrefix+"a"] != "1 v1" {
		t.Fatalf("report %v after fleet gone was deleted, want only a", got)
	}
}
