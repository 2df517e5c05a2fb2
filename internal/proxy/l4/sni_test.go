package l4

import (
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
)

// sniListener is a TLS passthrough listener: one chain per cluster, matched
// by the given server names ("" for the chain without names).
func sniListener(t *testing.T, chains map[string][]string) *listenerv3.Listener {
	t.Helper()
	l := &listenerv3.Listener{Name: "tls", Address: tcpListener(t, "x", 0).Address,
		ListenerFilters: []*listenerv3.ListenerFilter{{Name: TLSInspectorFilter,
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(t, &tlsinspectorv3.TlsInspector{})}}}}
	for cluster, names := range chains {
		fc := tcpListener(t, cluster, 0).FilterChains[0]
		if len(names) > 0 && names[0] != "" {
			fc.FilterChainMatch = &listenerv3.FilterChainMatch{ServerNames: names}
		}
		l.FilterChains = append(l.FilterChains, fc)
	}
	return l
}

func TestSNIChainSelection(t *testing.T) {
	cfg, err := parseTCP(sniListener(t, map[string][]string{
		"exact": {"a.example.com"}, "wild": {"*.example.com"}, "deeper": {"*.b.example.com"}, "default": nil}))
	if err != nil {
		t.Fatal(err)
	}
	for sni, want := range map[string]string{
		"a.example.com": "exact", "A.Example.com.": "exact", "c.example.com": "wild", "x.b.example.com": "deeper",
		"example.com": "default", "": "default", "other.org": "default",
	} {
		if got := cfg.chainFor(sni); got == nil || got.cluster != want {
			t.Errorf("SNI %q: chain %+v, want %s", sni, got, want)
		}
	}
	noDefault, err := parseTCP(sniListener(t, map[string][]string{"exact": {"a.example.com"}}))
	if err != nil {
		t.Fatal(err)
	}
	if got := noDefault.chainFor("other.org"); got != nil {
		t.Errorf("a name no chain matches got %+v", got)
	}
}

// What Envoy would refuse, or fleetlb-proxy cannot do, is refused by name.
func TestSNIListenerRefusals(t *testing.T) {
	dup := sniListener(t, map[string][]string{"a": {"a.example.com"}, "b": {"a.example.com"}})
	other := sniListener(t, map[string][]string{"a": nil})
	other.ListenerFilters[0].Name = "envoy.filters.listener.original_dst"
	for name, tc := range map[string]struct {
		l    *listenerv3.Listener
		want string
	}{
		"duplicate server name": {dup, `server name "a.example.com" is already matched`},
		"other listener filter": {other, "listener_filters: only one envoy.filters.listener.tls_inspector"},
	} {
		if _, err := parseTCP(tc.l); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
}
