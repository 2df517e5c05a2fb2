package upstream

import (
	"testing"
	"time"

	"github.com/fleetlb/fleetlb/internal/model"
)

// TestLoadStatsPerLocalityAndPriority: every pick is an issued request of
// its host's locality and priority, every reported outcome a success or an
// error, as Envoy's LRS counts them; a report resets the counts.
func TestLoadStatsPerLocalityAndPriority(t *testing.T) {
	m := manager(t, model.Backend{Groups: groups(group{prio: 0, zone: "z1", addrs: []string{"127.0.0.1:1"}}, group{prio: 1, zone: "z2", addrs: []string{"127.0.0.1:2"}})})
	for range 3 {
		a, err := m.PickFor("c", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if a.Addr != "127.0.0.1:1" {
			t.Fatalf("picked %s, want priority 0", a.Addr)
		}
		m.ReportStatus("c", a.Addr, 200)
	}
	m.Report("c", "127.0.0.1:1", false)
	stats := m.LoadStats(nil, true, time.Second)
	if len(stats) != 1 || stats[0].GetClusterName() != "c" || stats[0].GetLoadReportInterval().AsDuration() != time.Second {
		t.Fatalf("stats %v, want one report of cluster c over 1s", stats)
	}
	locs := stats[0].GetUpstreamLocalityStats()
	if len(locs) != 1 {
		t.Fatalf("%d localities reported, want only priority 0's (priority 1 took nothing): %v", len(locs), locs)
	}
	l := locs[0]
	if l.GetLocality().GetZone() != "z1" || l.GetPriority() != 0 || l.GetTotalIssuedRequests() != 3 || l.GetTotalSuccessfulRequests() != 3 || l.GetTotalErrorRequests() != 1 {
		t.Fatalf("locality stats %v, want z1 priority 0: 3 issued, 3 successful, 1 error", l)
	}
	if again := m.LoadStats([]string{"c"}, false, time.Second); len(again) != 0 {
		t.Fatalf("a second report without traffic: %v, want none", again)
	}
}
