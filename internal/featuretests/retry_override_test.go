package featuretests

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/fleetlb/fleetlb/internal/model"
)

// TestRouteRetryOverride: a route's own retry policy (issue 14, from a Route
// rule's retry) replaces the virtual host's default, through the real
// translator, xDS server and fleetlb-proxy. Priority 0 answers 503 and
// priority 1 answers 200.
//   - /pay has attempts 0: a GET, which the default would retry, is not:
//     the client sees the 503 and priority 0 saw each GET once.
//   - /upload retries 5xx for every method: a POST with a body goes on to
//     priority 1 and the client sees its 200.
func TestRouteRetryOverride(t *testing.T) {
	primary := startStatusBackend(t, http.StatusServiceUnavailable)
	standby := startHTTPEcho(t, "west", "west-1", "web")
	vip := netip.MustParseAddr("127.0.31.51")
	e := newEnv(t, true)
	f := failoverFleet(vip, []model.Endpoint{primary.ep}, []model.Endpoint{standby.endpoint()}, &model.Outlier{Consecutive5xx: 1000})
	pay, upload := fwd("web"), fwd("web")
	pay.Retry = &model.Retry{Attempts: 0}
	upload.Retry = &model.Retry{Attempts: 2, RetryOn: []string{"5xx"}, AllMethods: true}
	f.VirtualHosts[0].Routes = append([]model.Route{
		{Name: "pay", Match: prefix("/pay"), Forward: pay},
		{Name: "upload", Match: prefix("/upload"), Forward: upload},
	}, f.VirtualHosts[0].Routes...)
	e.apply(f)
	c := client(netip.AddrPortFrom(vip, 8080).String(), nil)

	for i := range 3 {
		if r := get(t, c, "http://web.example.com/pay"); r.status != http.StatusServiceUnavailable {
			t.Fatalf("GET /pay %d: status %d from %q, want priority 0's 503 unretried", i, r.status, r.reply.Cluster)
		}
		if n := primary.count(http.MethodGet); n != i+1 {
			t.Fatalf("after %d GETs of /pay priority 0 saw %d: a GET was retried", i+1, n)
		}
	}
	// The rest of the virtual host keeps the default: its GET is retried.
	if r := get(t, c, "http://web.example.com/"); r.status != http.StatusOK || r.reply.Cluster != "west" {
		t.Fatalf("GET /: status %d from %q, want 200 from west (default policy)", r.status, r.reply.Cluster)
	}

	for i := range 3 {
		before := primary.count(http.MethodPost)
		req, _ := http.NewRequest(http.MethodPost, "http://web.example.com/upload", strings.NewReader("file=1"))
		if r := do(t, c, req); r.status != http.StatusOK || r.reply.Cluster != "west" {
			t.Fatalf("POST /upload %d: status %d from %q, want 200 from west", i, r.status, r.reply.Cluster)
		}
		if n := primary.count(http.MethodPost); n <= before {
			t.Fatalf("POST /upload %d never reached priority 0: nothing was retried", i)
		}
	}
	// A POST elsewhere is still not retried.
	req, _ := http.NewRequest(http.MethodPost, "http://web.example.com/", strings.NewReader("order=1"))
	if r := do(t, c, req); r.status != http.StatusServiceUnavailable {
		t.Fatalf("POST /: status %d, want the default policy's unretried 503", r.status)
	}
}
