package featuretests

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fleetlb/fleetlb/internal/echo"
	"github.com/fleetlb/fleetlb/internal/model"
)

// udpAsk sends one datagram from src to addr and returns the reply ("" on timeout).
func udpAsk(t *testing.T, src, addr string) string {
	t.Helper()
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1024)
	n, err := c.Read(buf)
	if err != nil {
		return ""
	}
	return string(buf[:n])
}

// TestUDPSourceRanges: the udp_proxy source-IP matcher routes allowed clients and
// drops everyone else's datagrams.
func TestUDPSourceRanges(t *testing.T) {
	dns := echo.New(echo.Identity{Cluster: "a", Node: "dns-1", Service: "dns"})
	defer dns.Close()
	a, err := dns.ServeUDP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(a.String())
	vip := netip.MustParseAddr("127.0.31.9")
	e := newEnv(t, true)
	e.apply(&model.Fleet{
		Name: fleetName,
		L4: []model.L4Service{{Ref: model.Ref{Tenant: "a", Namespace: "ns", Name: "dns"}, VIP: vip, Port: 5353, Protocol: model.UDP,
			Backend: "dns", SourceRanges: []netip.Prefix{netip.MustParsePrefix("127.0.0.96/30")}}},
		Backends: []model.Backend{{Name: "dns", Protocol: model.BackendUDP,
			Groups: []model.EndpointGroup{{Cluster: "a", Endpoints: []model.Endpoint{{Address: ap.Addr(), Port: ap.Port()}}}}}},
	})
	to := netip.AddrPortFrom(vip, 5353).String()
	if got := udpAsk(t, "127.0.0.98", to); !strings.Contains(got, "node=dns-1") || !strings.HasSuffix(got, "ping") {
		t.Errorf("allowed source: reply %q", got)
	}
	if got := udpAsk(t, "127.0.0.1", to); got != "" {
		t.Errorf("a source outside the ranges got a reply: %q", got)
	}
}
