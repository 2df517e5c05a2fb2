package backends

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

func tenantWith(cidrs ...v1.CIDR) *v1.Tenant {
	return &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: v1.TenantSpec{NodeCIDRs: cidrs}}
}

func nodesWith(addrs ...string) *v1.TenantNodes {
	n := &v1.TenantNodes{Spec: v1.TenantNodesSpec{Cluster: "c"}}
	for i, a := range addrs {
		n.Spec.Nodes = append(n.Spec.Nodes, v1.TenantNode{Name: fmt.Sprintf("n%d", i), Zone: "z", Addresses: []v1.IPAddress{v1.IPAddress(a)}})
	}
	return n
}

// reasons maps every address of nodes to its refusal reason ("" when served).
func reasons(t *testing.T, tn *v1.Tenant, nodes *v1.TenantNodes, deny DenyList) map[string]string {
	t.Helper()
	allowed, refused := Confine(tn, nodes, deny)
	out := map[string]string{}
	for _, n := range allowed.Spec.Nodes {
		for _, a := range n.Addresses {
			out[string(a)] = ""
		}
	}
	for _, r := range refused {
		if r.Message == "" {
			t.Errorf("refusal of %s has no message", r.Address)
		}
		out[r.Address] = r.Reason
	}
	return out
}

func TestConfineDefaultDenyList(t *testing.T) {
	tn := tenantWith("0.0.0.0/0", "::/0") // the tenant may be anywhere: only the deny-list holds
	deny := NewDenyList(nil, nil, nil)
	cases := map[string]string{
		"10.1.2.3":               "",
		"192.0.2.7":              "",
		"2001:db8::5":            "",
		"127.0.0.1":              v1.RefusedDenied,
		"127.1.2.3":              v1.RefusedDenied,
		"::1":                    v1.RefusedDenied,
		"169.254.169.254":        v1.RefusedDenied,
		"fe80::1":                v1.RefusedDenied,
		"0.0.0.0":                v1.RefusedDenied,
		"::":                     v1.RefusedDenied,
		"224.0.0.1":              v1.RefusedDenied,
		"239.255.255.250":        v1.RefusedDenied,
		"255.255.255.255":        v1.RefusedDenied,
		"ff02::1":                v1.RefusedDenied,
		"::ffff:127.0.0.1":       v1.RefusedDenied, // IPv4-mapped loopback is loopback
		"::ffff:169.254.169.254": v1.RefusedDenied,
		"fe80::1%eth0":           v1.RefusedInvalid,
		"not-an-ip":              v1.RefusedInvalid,
	}
	var addrs []string
	for a := range cases {
		addrs = append(addrs, a)
	}
	slices.Sort(addrs)
	got := reasons(t, tn, nodesWith(addrs...), deny)
	for a, want := range cases {
		// Served addresses are reported in their canonical form.
		if g, ok := got[a]; !ok || g != want {
			t.Errorf("%s: reason %q (present %v), want %q", a, g, ok, want)
		}
	}
}

func TestConfineNodeCIDRs(t *testing.T) {
	deny := NewDenyList(MustParsePrefixes("127.0.0.1/32"), nil, nil)
	tn := tenantWith("127.0.1.0/24", "fd00:1::/64")
	got := reasons(t, tn, nodesWith("127.0.1.5", "127.0.2.5", "fd00:1::9", "fd00:2::9", "127.0.0.1", "10.0.0.1"), deny)
	want := map[string]string{
		"127.0.1.5": "", "fd00:1::9": "",
		"127.0.2.5": v1.RefusedOutsideNodeCIDRs, "fd00:2::9": v1.RefusedOutsideNodeCIDRs, "10.0.0.1": v1.RefusedOutsideNodeCIDRs,
		"127.0.0.1": v1.RefusedDenied,
	}
	for a, w := range want {
		if got[a] != w {
			t.Errorf("%s: %q, want %q", a, got[a], w)
		}
	}

	// An empty list allows nothing, and says so.
	_, refused := Confine(tenantWith(), nodesWith("10.0.0.1"), deny)
	if len(refused) != 1 || refused[0].Reason != v1.RefusedOutsideNodeCIDRs || !strings.Contains(refused[0].Message, "no nodeCIDRs") {
		t.Fatalf("refused %+v", refused)
	}
}

func TestConfineMappedAddresses(t *testing.T) {
	deny := NewDenyList(MustParsePrefixes("::ffff:127.0.0.0/104"), nil, nil) // loopback, written mapped
	tn := tenantWith("::ffff:10.0.0.0/112")                                  // nodes (10.0.0.0/16), written mapped
	allowed, refused := Confine(tn, nodesWith("10.0.0.1", "::ffff:10.0.0.2", "127.0.0.1", "10.1.0.1"), deny)
	var served []string
	for _, n := range allowed.Spec.Nodes {
		for _, a := range n.Addresses {
			served = append(served, string(a))
		}
	}
	if !slices.Equal(served, []string{"10.0.0.1", "10.0.0.2"}) { // served unmapped
		t.Fatalf("served %v", served)
	}
	if len(refused) != 2 || refused[0].Reason != v1.RefusedDenied || refused[1].Reason != v1.RefusedOutsideNodeCIDRs {
		t.Fatalf("refused %+v", refused)
	}
}

func TestConfinePoolsAndFleetAddresses(t *testing.T) {
	pools := []v1.AddressPool{
		{ObjectMeta: metav1.ObjectMeta{Name: "vips"}, Spec: v1.AddressPoolSpec{Addresses: []v1.AddressRange{"127.0.50.1-127.0.50.9", "fd00:50::/120"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "other"}, Spec: v1.AddressPoolSpec{Addresses: []v1.AddressRange{"127.0.60.7", "garbage"}}},
	}
	fleets := []v1.ProxyFleet{
		{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: v1.ProxyFleetSpec{VIP: "127.0.70.1"},
			Status: v1.ProxyFleetStatus{Addresses: []v1.Address{{IP: "127.0.50.1"}}}},
	}
	deny := NewDenyList(MustParsePrefixes("127.0.0.1/32"), pools, fleets)
	tn := tenantWith("127.0.0.0/8", "fd00::/16")
	got := reasons(t, tn, nodesWith("127.0.50.1", "127.0.50.5", "127.0.50.10", "127.0.60.7", "127.0.70.1", "fd00:50::80", "fd00:51::1", "::ffff:127.0.50.3"), deny)
	want := map[string]string{
		"127.0.50.1":        v1.RefusedFleetAddress,
		"127.0.50.5":        v1.RefusedAddressPool,
		"127.0.50.10":       "",
		"127.0.60.7":        v1.RefusedAddressPool,
		"127.0.70.1":        v1.RefusedFleetAddress,
		"fd00:50::80":       v1.RefusedAddressPool,
		"fd00:51::1":        "",
		"::ffff:127.0.50.3": v1.RefusedAddressPool,
	}
	for a, w := range want {
		if got[a] != w {
			t.Errorf("%s: %q, want %q", a, got[a], w)
		}
	}
	// No message names a pool, another fleet's name, or anything but the address.
	_, refused := Confine(tn, nodesWith("127.0.60.7", "127.0.50.1"), deny)
	for _, r := range refused {
		if strings.Contains(r.Message, "other") || strings.Contains(r.Message, "default") || strings.Contains(r.Message, "vips") {
			t.Errorf("message names an object: %q", r.Message)
		}
	}
}

func TestConfineKeepsNodesWithSomeAddresses(t *testing.T) {
	nodes := &v1.TenantNodes{Spec: v1.TenantNodesSpec{Cluster: "c", Nodes: []v1.TenantNode{
		{Name: "good", Zone: "z1", Addresses: []v1.IPAddress{"10.0.0.1", "127.0.0.1"}},
		{Name: "bad", Zone: "z2", Addresses: []v1.IPAddress{"169.254.169.254"}},
	}}}
	allowed, refused := Confine(tenantWith("10.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16"), nodes, NewDenyList(nil, nil, nil))
	if len(allowed.Spec.Nodes) != 1 || allowed.Spec.Nodes[0].Name != "good" || !slices.Equal(allowed.Spec.Nodes[0].Addresses, []v1.IPAddress{"10.0.0.1"}) ||
		allowed.Spec.Cluster != "c" || allowed.Spec.Nodes[0].Zone != "z1" {
		t.Fatalf("allowed %+v", allowed.Spec)
	}
	if len(refused) != 2 || refused[0].Node != "good" || refused[1].Node != "bad" {
		t.Fatalf("refused %+v", refused)
	}
	if len(nodes.Spec.Nodes[0].Addresses) != 2 {
		t.Fatal("Confine changed its input")
	}
	if s := Summary(refused, 1); !strings.Contains(s, "2 node address(es) not served (1 served)") || !strings.Contains(s, "169.254.169.254") {
		t.Fatalf("summary %q", s)
	}
}

func TestParsePrefixes(t *testing.T) {
	got, err := ParsePrefixes("127.0.0.1/32, 10.0.0.5,fd00::/8", "")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.0.0.5/32"), netip.MustParsePrefix("fd00::/8")}
	if !slices.Equal(got, want) {
		t.Fatalf("%v", got)
	}
	if _, err := ParsePrefixes("10.0.0.0/33"); err == nil {
		t.Fatal("accepted /33")
	}
}

func TestNodePortRange(t *testing.T) {
	tn := tenantWith()
	if CheckNodePort(tn, 30000) != "" || CheckNodePort(tn, 32767) != "" || CheckNodePort(tn, 29999) == "" || CheckNodePort(tn, 32768) == "" {
		t.Fatal("default range is not 30000-32767")
	}
	tn.Spec.NodePortRange = &v1.PortRange{Min: 8000, Max: 8001}
	if CheckNodePort(tn, 8001) != "" || !strings.Contains(CheckNodePort(tn, 15000), "8000-8001") {
		t.Fatal("custom range not applied")
	}
}

func TestMessagesStayShort(t *testing.T) {
	var cidrs []v1.CIDR
	for i := range 64 {
		cidrs = append(cidrs, v1.CIDR(fmt.Sprintf("10.%d.0.0/16", i)))
	}
	var addrs []string
	for i := range 40 {
		addrs = append(addrs, fmt.Sprintf("192.0.2.%d", i))
	}
	_, refused := Confine(tenantWith(cidrs...), nodesWith(addrs...), NewDenyList(nil, nil, nil))
	if len(refused) != 40 || !strings.Contains(refused[0].Message, "and 60 more") || len(refused[0].Message) > 200 {
		t.Fatalf("message %q", refused[0].Message)
	}
	if s := Summary(refused, 0); len(s) > 1024 || !strings.Contains(s, "and 35 more") {
		t.Fatalf("summary (%d bytes) %q", len(s), s)
	}
	if got := Truncate(strings.Repeat("é", 600), 1024); len(got) > 1024 || !strings.HasSuffix(got, "...") || !utf8.ValidString(got) {
		t.Fatalf("truncated to %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
}
