package featuretests

import (
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"testing"

	"github.com/fleetlb/fleetlb/internal/model"
)

// BenchmarkHTTPThroughProxy measures one keep-alive HTTP/1.1 request through
// fleetlb-proxy (route lookup among 1000 virtual hosts, forward, echo reply),
// against the same request sent to the echo backend directly.
func BenchmarkHTTPThroughProxy(b *testing.B) {
	web := startHTTPEcho(b, "a", "web-1", "web")
	vip := netip.MustParseAddr("127.0.31.10")
	f := &model.Fleet{Name: fleetName, HTTP: &model.SharedListener{VIP: vip, Port: 8080},
		Backends: []model.Backend{httpBackend("web", model.BackendHTTP1, web)}}
	for i := range 1000 {
		name := "h" + strconv.Itoa(i)
		f.VirtualHosts = append(f.VirtualHosts, model.VirtualHost{Name: name, Hostnames: []string{name + ".example.com"},
			Routes: []model.Route{{Name: "api", Match: prefix("/api"), Forward: fwd("web")}, {Name: "all", Match: prefix("/"), Forward: fwd("web")}}})
	}
	e := newEnv(b, true)
	e.apply(f)
	run := func(b *testing.B, to, url string) {
		c := client(to, nil)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			resp, err := c.Get(url)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	}
	b.Run("direct", func(b *testing.B) { run(b, web.addr.String(), "http://h999.example.com/") })
	b.Run("proxy", func(b *testing.B) { run(b, netip.AddrPortFrom(vip, 8080).String(), "http://h999.example.com/") })
}
