// Package echo runs the backends that tests and the demo put behind the load
// balancer. Every answer names the backend that produced it (tenant cluster,
// node, service), so a test sees exactly where a request went.
//
//   - TCP: on accept the server writes one identity line, then echoes bytes.
//   - UDP: every datagram is answered with the identity line followed by the payload.
//   - HTTP (h1 and h2c): a JSON Reply with the identity and what the request looked like.
package echo

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
)

// Identity says which backend answered.
type Identity struct {
	Cluster string `json:"cluster"`
	Node    string `json:"node"`
	Service string `json:"service"`
}

// Line is the identity as the one-line form TCP and UDP use.
func (id Identity) Line() string {
	return fmt.Sprintf("cluster=%s node=%s service=%s\n", id.Cluster, id.Node, id.Service)
}

// ParseLine reads the one-line form back.
func ParseLine(line string) (Identity, error) {
	var id Identity
	fields := strings.Fields(line)
	if len(fields) != 3 {
		return id, fmt.Errorf("echo: not an identity line: %q", line)
	}
	for _, f := range fields {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "cluster":
			id.Cluster = v
		case "node":
			id.Node = v
		case "service":
			id.Service = v
		default:
			return id, fmt.Errorf("echo: unknown field %q in %q", k, line)
		}
	}
	return id, nil
}

// Reply is what the HTTP echo answers.
type Reply struct {
	Identity
	Method  string              `json:"method"`
	Host    string              `json:"host"`
	Path    string              `json:"path"`
	Query   string              `json:"query,omitempty"`
	Proto   string              `json:"proto"`
	Headers map[string][]string `json:"headers"`
	// ProxyProtocol is the PROXY header the connection started with, if any.
	ProxyProtocol string `json:"proxyProtocol,omitempty"`
}

// Server is a set of running echo listeners; Close stops them all.
type Server struct {
	ID      Identity
	mu      sync.Mutex
	closers []io.Closer
	conns   map[net.Conn]struct{} // open TCP connections, closed with the server
	wg      sync.WaitGroup
	status  atomic.Int32 // forced HTTP status (SetHTTPStatus), 0 for none
}

// New returns a server that answers as id.
func New(id Identity) *Server { return &Server{ID: id} }

func (s *Server) track(c io.Closer) {
	s.mu.Lock()
	s.closers = append(s.closers, c)
	s.mu.Unlock()
}

// Close stops every listener and waits for their goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	cs := s.closers
	s.closers = nil
	for c := range s.conns {
		cs = append(cs, c)
	}
	s.conns = nil
	s.mu.Unlock()
	var errs []error
	for _, c := range cs {
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// SetHTTPStatus makes every HTTP answer carry code (still with the identity
// body), as a failing backend that answers 503 would; 0 restores normal answers.
// It takes effect for requests that arrive afterwards, health checks included.
func (s *Server) SetHTTPStatus(code int) { s.status.Store(int32(code)) }

// ServeTCP listens on addr ("127.0.0.1:0" for any port) and returns the bound address.
func (s *Server) ServeTCP(addr string) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s.track(ln)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			if s.conns == nil {
				s.conns = map[net.Conn]struct{}{}
			}
			s.conns[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() {
					s.mu.Lock()
					delete(s.conns, c)
					s.mu.Unlock()
					c.Close()
				}()
				if _, err := io.WriteString(c, s.ID.Line()); err != nil {
					return
				}
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr(), nil
}

// ServeUDP listens on addr and answers every datagram.
func (s *Server) ServeUDP(addr string) (net.Addr, error) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, err
	}
	s.track(pc)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		buf := make([]byte, 64*1024)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			out := append([]byte(s.ID.Line()), buf[:n]...)
			_, _ = pc.WriteTo(out, from)
		}
	}()
	return pc.LocalAddr(), nil
}

// Handler is the HTTP echo as a handler (h1; wrap with h2c for cleartext h2).
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if forced := s.status.Load(); forced != 0 {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Echo-Node", s.ID.Node)
			w.WriteHeader(int(forced))
			_ = json.NewEncoder(w).Encode(Reply{Identity: s.ID, Method: r.Method, Host: r.Host, Path: r.URL.Path, Proto: r.Proto})
			return
		}
		if code := r.URL.Query().Get("status"); code != "" {
			var c int
			if _, err := fmt.Sscan(code, &c); err == nil && c >= 200 && c < 600 {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(c)
			}
		}
		if d := r.URL.Query().Get("delay"); d != "" {
			if dur, err := time.ParseDuration(d); err == nil && dur <= 30*time.Second {
				select {
				case <-time.After(dur):
				case <-r.Context().Done():
					return
				}
			}
		}
		headers := map[string][]string{}
		for k, v := range r.Header {
			headers[k] = v
		}
		rep := Reply{
			Identity: s.ID, Method: r.Method, Host: r.Host, Path: r.URL.Path,
			Query: r.URL.RawQuery, Proto: r.Proto, Headers: headers,
		}
		if pp, ok := r.Context().Value(proxyHeaderKey{}).(string); ok {
			rep.ProxyProtocol = pp
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Echo-Node", s.ID.Node)
		_ = json.NewEncoder(w).Encode(rep)
	})
}

type proxyHeaderKey struct{}

// ServeHTTP listens on addr and serves the HTTP echo over HTTP/1.1 and h2c.
// With acceptProxyProtocol, a leading PROXY v1 line is read and reported.
func (s *Server) ServeHTTP(addr string, acceptProxyProtocol bool) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{
		Handler:           h2c.NewHandler(s.Handler(), &http2.Server{}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	if acceptProxyProtocol {
		srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
			if pc, ok := c.(*proxyConn); ok {
				return context.WithValue(ctx, proxyHeaderKey{}, pc.header)
			}
			return ctx
		}
		ln = &proxyListener{Listener: ln}
	}
	s.track(srv)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = srv.Serve(ln)
	}()
	return ln.Addr(), nil
}

// proxyListener strips a PROXY protocol v1 line ("PROXY TCP4 ...\r\n").
type proxyListener struct{ net.Listener }

type proxyConn struct {
	net.Conn
	r      *bufio.Reader
	header string
}

func (c *proxyConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (l *proxyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	r := bufio.NewReader(c)
	pc := &proxyConn{Conn: c, r: r}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := r.Peek(6); err == nil && string(b) == "PROXY " {
		line, err := r.ReadString('\n')
		if err == nil {
			pc.header = strings.TrimRight(line, "\r\n")
		}
	}
	_ = c.SetReadDeadline(time.Time{})
	return pc, nil
}

// Fleet runs many identities at once, e.g. one per (node, NodePort), and
// remembers where each listens.
type Fleet struct {
	mu      sync.Mutex
	servers map[string]*Server
}

// NewFleet returns an empty fleet.
func NewFleet() *Fleet { return &Fleet{servers: map[string]*Server{}} }

// Start runs one backend at addr with the given protocol ("tcp", "udp", "http").
// Starting the same key twice is a no-op.
func (f *Fleet) Start(key string, id Identity, protocol, addr string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.servers[key]; ok {
		return nil
	}
	s := New(id)
	var err error
	switch protocol {
	case "tcp":
		_, err = s.ServeTCP(addr)
	case "udp":
		_, err = s.ServeUDP(addr)
	case "http":
		_, err = s.ServeHTTP(addr, false)
	case "grpc":
		_, err = s.ServeGRPC(addr)
	default:
		err = fmt.Errorf("echo: unknown protocol %q", protocol)
	}
	if err != nil {
		_ = s.Close()
		return err
	}
	f.servers[key] = s
	return nil
}

// Stop ends one backend.
func (f *Fleet) Stop(key string) error {
	f.mu.Lock()
	s, ok := f.servers[key]
	delete(f.servers, key)
	f.mu.Unlock()
	if !ok {
		return nil
	}
	return s.Close()
}

// Keys lists the running backends, sorted.
func (f *Fleet) Keys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	keys := make([]string, 0, len(f.servers))
	for k := range f.servers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Close stops everything.
func (f *Fleet) Close() error {
	var errs []error
	for _, k := range f.Keys() {
		errs = append(errs, f.Stop(k))
	}
	return errors.Join(errs...)
}
