package translate

import (
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/fleetlb/fleetlb/internal/model"
)

// TestHTTPSRedirectNamesTheFleetsPort: the HTTP→HTTPS redirect of a virtual
// host names the fleet's HTTPS port in Location unless it is 443, in a
// translation from scratch and in an incremental one after the port moves.
func TestHTTPSRedirectNamesTheFleetsPort(t *testing.T) {
	base := loadModel(t, "testdata/l7-tls-redirect-to-https.in.yaml")
	fleet := func(httpsPort uint16) *model.Fleet {
		f := cloneFleet(t, base)
		f.HTTPS.Port = httpsPort
		return f
	}
	portOf := func(out *Output) uint32 {
		t.Helper()
		for _, r := range out.Routes {
			if rc := r.(*routev3.RouteConfiguration); rc.Name == HTTPRouteName {
				return rc.VirtualHosts[0].Routes[0].GetRedirect().GetPortRedirect()
			}
		}
		t.Fatal("no HTTP route configuration")
		return 0
	}
	var x Incremental
	for _, tc := range []struct{ https, want uint16 }{{8443, 8443}, {443, 0}, {9443, 9443}} {
		full, err := Translate(fleet(tc.https))
		if err != nil {
			t.Fatal(err)
		}
		inc, _, err := x.Translate(fleet(tc.https))
		if err != nil {
			t.Fatal(err)
		}
		if got, gotInc := portOf(full), portOf(inc); got != uint32(tc.want) || gotInc != uint32(tc.want) {
			t.Errorf("HTTPS on %d: redirect port %d (incremental %d), want %d", tc.https, got, gotInc, tc.want)
		}
	}
}
