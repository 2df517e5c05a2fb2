package l4

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
)

// TLSInspectorFilter is the listener filter that reads the ClientHello's SNI.
const TLSInspectorFilter = "envoy.filters.listener.tls_inspector"

// sniInspectTimeout bounds reading the ClientHello, as Envoy's listener
// filter timeout (15 s) does; a connection without one is closed.
const sniInspectTimeout = 15 * time.Second

// maxClientHello bounds what is read while looking for the SNI.
const maxClientHello = 64 << 10

// sniChain is one filter chain of a TLS passthrough listener: the server
// names it matches (none: every name no other chain matches) and its
// tcp_proxy configuration.
type sniChain struct {
	serverNames []string
	cfg         *tcpConfig
}

// parseSNIListener reads a TLS passthrough listener: the tls_inspector
// listener filter and filter chains matched by server_names, each ending in
// tcp_proxy. The connection is not terminated: its bytes, ClientHello
// included, go to the chain's cluster.
func parseSNIListener(l *listenerv3.Listener, base *tcpConfig) (*tcpConfig, error) {
	name := l.GetName()
	if len(l.GetListenerFilters()) != 1 || l.GetListenerFilters()[0].GetName() != TLSInspectorFilter {
		return nil, fmt.Errorf("listener %q: listener_filters: only one %s is supported on TCP listeners", name, TLSInspectorFilter)
	}
	lf := l.GetListenerFilters()[0]
	where := fmt.Sprintf("listener %q: listener_filters[0]", name)
	if err := unsupported(where, lf, "name", "typed_config"); err != nil {
		return nil, err
	}
	if tc := lf.GetTypedConfig(); tc != nil {
		ti := &tlsinspectorv3.TlsInspector{}
		if err := tc.UnmarshalTo(ti); err != nil {
			return nil, fmt.Errorf("%s: typed_config: %w", where, err)
		}
		if err := unsupported(where+": typed_config", ti); err != nil {
			return nil, err
		}
	}
	if len(l.GetFilterChains()) == 0 {
		return nil, fmt.Errorf("listener %q: filter_chains is empty", name)
	}
	cfg := &tcpConfig{buffer: base.buffer}
	seen := map[string]int{}
	for i, fc := range l.GetFilterChains() {
		w := fmt.Sprintf("listener %q: filter_chains[%d]", name, i)
		if err := unsupported(w, fc, "filters", "name", "filter_chain_match"); err != nil {
			return nil, err
		}
		c := sniChain{cfg: &tcpConfig{buffer: base.buffer}}
		if m := fc.GetFilterChainMatch(); m != nil {
			if err := unsupported(w+".filter_chain_match", m, "server_names"); err != nil {
				return nil, err
			}
			for _, n := range m.GetServerNames() {
				c.serverNames = append(c.serverNames, strings.ToLower(n))
			}
		}
		names := c.serverNames
		if len(names) == 0 {
			names = []string{""}
		}
		for _, n := range names {
			if j, dup := seen[n]; dup {
				return nil, fmt.Errorf("%s: server name %q is already matched by filter_chains[%d]", w, n, j)
			}
			seen[n] = i
		}
		if err := parseTCPFilters(w, fc, c.cfg); err != nil {
			return nil, err
		}
		cfg.sni = append(cfg.sni, c)
	}
	return cfg, nil
}

// chainFor picks the filter chain for a server name as Envoy does: an exact
// name, then the longest "*.suffix" wildcard, then the chain without names.
func (c *tcpConfig) chainFor(serverName string) *tcpConfig {
	name := strings.ToLower(strings.TrimSuffix(serverName, "."))
	var candidates []string
	if name != "" {
		candidates = append(candidates, name)
		for rest := name; ; {
			i := strings.IndexByte(rest, '.')
			if i < 0 || i == len(rest)-1 {
				break
			}
			rest = rest[i+1:]
			candidates = append(candidates, "*."+rest)
		}
	}
	for _, cand := range candidates {
		for _, ch := range c.sni {
			for _, n := range ch.serverNames {
				if n == cand {
					return ch.cfg
				}
			}
		}
	}
	for _, ch := range c.sni {
		if len(ch.serverNames) == 0 {
			return ch.cfg
		}
	}
	return nil
}

var errHelloRead = errors.New("client hello read")

// peekServerName reads the ClientHello from c and returns its SNI ("" when
// it has none) and a connection that replays what was read. A connection
// that does not start with a TLS ClientHello is an error.
func peekServerName(c net.Conn) (string, net.Conn, error) {
	var buf bytes.Buffer
	_ = c.SetReadDeadline(time.Now().Add(sniInspectTimeout))
	defer c.SetReadDeadline(time.Time{})
	var serverName string
	got := false
	srv := tls.Server(helloReader{r: io.TeeReader(io.LimitReader(c, maxClientHello), &buf)}, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			serverName, got = h.ServerName, true
			return nil, errHelloRead
		},
	})
	err := srv.Handshake()
	if !got {
		return "", nil, fmt.Errorf("no TLS ClientHello: %v", err)
	}
	return serverName, &replayConn{Conn: c, r: io.MultiReader(bytes.NewReader(buf.Bytes()), c)}, nil
}

// helloReader is the read side only: the TLS server never answers the client.
type helloReader struct{ r io.Reader }

func (h helloReader) Read(p []byte) (int, error)     { return h.r.Read(p) }
func (helloReader) Write(p []byte) (int, error)      { return 0, errHelloRead }
func (helloReader) Close() error                     { return nil }
func (helloReader) LocalAddr() net.Addr              { return nil }
func (helloReader) RemoteAddr() net.Addr             { return nil }
func (helloReader) SetDeadline(time.Time) error      { return nil }
func (helloReader) SetReadDeadline(time.Time) error  { return nil }
func (helloReader) SetWriteDeadline(time.Time) error { return nil }

// replayConn is the downstream connection with the bytes read for the SNI
// put back in front.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite half-closes the underlying connection (pipe's half-close).
func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
