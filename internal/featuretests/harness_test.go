package featuretests

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"github.com/fleetlb/fleetlb/internal/fasthealth"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/go-logr/logr/testr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/fleetlb/fleetlb/envoy/server"
	"github.com/fleetlb/fleetlb/envoy/translate"
	"github.com/fleetlb/fleetlb/internal/echo"
	"github.com/fleetlb/fleetlb/internal/model"
	"github.com/fleetlb/fleetlb/internal/pki"
	"github.com/fleetlb/fleetlb/internal/proxy"
	"github.com/fleetlb/fleetlb/internal/proxy/l7"
	"github.com/fleetlb/fleetlb/internal/proxy/upstream"
	"github.com/fleetlb/fleetlb/internal/testcerts"
	"github.com/fleetlb/fleetlb/internal/xdstransport"
)

const fleetName = "default"

// env is one xDS server and one fleetlb-proxy connected to it over real
// gRPC with mutual TLS: the proxy presents a client certificate for fleetName
// from the server's CA, as in production.
type env struct {
	t       testing.TB
	xdsCA   *pki.CA
	serving *tls.Certificate
	client  *tls.Certificate
	xds     *server.Server
	xdsAddr string
	grpcSrv *grpc.Server
	wire    *wireCounter
	proxy   *proxy.Proxy
	acked   chan uint64
	stopPx  func()
}

// wireCounter counts what the server sends, per type URL, as the proxy receives it.
type wireCounter struct {
	mu        sync.Mutex
	resources map[string]int
	removed   map[string]int
}

func (w *wireCounter) reset() {
	w.mu.Lock()
	w.resources, w.removed = map[string]int{}, map[string]int{}
	w.mu.Unlock()
}

func (w *wireCounter) count(typeURL string) (sent, removed int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.resources[typeURL], w.removed[typeURL]
}

type countingStream struct {
	grpc.ServerStream
	w *wireCounter
}

func (s countingStream) SendMsg(m any) error {
	s.w.mu.Lock()
	switch r := m.(type) {
	case *discoveryv3.DeltaDiscoveryResponse:
		s.w.resources[r.GetTypeUrl()] += len(r.GetResources())
		s.w.removed[r.GetTypeUrl()] += len(r.GetRemovedResources())
	case *discoveryv3.DiscoveryResponse:
		s.w.resources[r.GetTypeUrl()] += len(r.GetResources())
	}
	s.w.mu.Unlock()
	return s.ServerStream.SendMsg(m)
}

func newEnv(t testing.TB, delta bool) *env {
	t.Helper()
	e := &env{t: t, wire: &wireCounter{}, acked: make(chan uint64, 1024)}
	e.wire.reset()
	e.xdsCA = must(pki.NewCA("featuretests xDS CA", time.Hour, time.Now()))
	e.serving = must(must(e.xdsCA.IssueServer([]string{"127.0.0.1"}, time.Hour, time.Now())).TLS())
	e.client = must(must(e.xdsCA.IssueFleetClient(fleetName, time.Hour, time.Now())).TLS())
	e.xds = server.New(server.Options{Log: testr.NewWithInterface(t, testr.Options{}).WithName("xds"), Debounce: 10 * time.Millisecond, MaxDelay: 100 * time.Millisecond})
	e.xds.OnAcked(func(fleet string, gen uint64) {
		if fleet == fleetName {
			select {
			case e.acked <- gen:
			default:
			}
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = e.xds.Run(ctx); close(done) }()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.xdsAddr = ln.Addr().String()
	e.serveXDS(ln)
	t.Cleanup(func() {
		if e.stopPx != nil {
			e.stopPx()
		}
		e.grpcSrv.Stop()
		cancel()
		<-done
	})
	e.startProxy(delta)
	return e
}

func (e *env) serveXDS(ln net.Listener) {
	creds := credentials.NewTLS(xdstransport.ServerTLS(func() (*tls.Certificate, *x509.CertPool, error) {
		return e.serving, e.xdsCA.Pool(), nil
	}))
	e.grpcSrv = grpc.NewServer(append(xdstransport.ServerOptions(creds),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return h(srv, countingStream{ServerStream: ss, w: e.wire})
		}))...)
	e.xds.Register(e.grpcSrv)
	go func() { _ = e.grpcSrv.Serve(ln) }()
}

// restartXDS stops the gRPC server (every stream breaks), runs f while no proxy is
// connected, and serves again on the same address.
func (e *env) restartXDS(f func()) {
	e.t.Helper()
	e.grpcSrv.Stop()
	f()
	ln, err := net.Listen("tcp", e.xdsAddr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.serveXDS(ln)
}

func (e *env) startProxy(delta bool) {
	t := e.t
	creds := credentials.NewTLS(&tls.Config{ServerName: "127.0.0.1", RootCAs: e.xdsCA.Pool(), Certificates: []tls.Certificate{*e.client}})
	conn, err := grpc.NewClient(e.xdsAddr, xdstransport.DialOptions(creds)...)
	if err != nil {
		t.Fatal(err)
	}
	log := testr.NewWithInterface(t, testr.Options{}).WithName("proxy")
	up := upstream.NewManager(log.WithName("upstream"))
	p, err := proxy.New(conn, proxy.Options{
		Node: &corev3.Node{Id: "proxy-0", Cluster: fleetName}, Delta: delta,
		Clusters: up, ValidateCluster: upstream.ValidateCluster, ValidateLoadAssignment: upstream.ValidateLoadAssignment,
		HTTP: l7.NewSet(up), DrainTimeout: 2 * time.Second,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = p.Run(ctx); close(done) }()
	e.proxy = p
	e.stopPx = func() {
		cancel()
		<-done
		up.Close()
		conn.Close()
	}
}

// apply translates f, hands it to the server and waits until the proxy ACKed it.
func (e *env) apply(f *model.Fleet) {
	e.t.Helper()
	out, err := fasthealth.Translate(f)
	if err != nil {
		e.t.Fatalf("translate: %v", err)
	}
	e.applyResources(out)
}

func (e *env) applyResources(out *translate.Output) {
	e.t.Helper()
	gen := e.xds.Set(fleetName, out.ByType())
	if err := e.xds.LastError(fleetName); err != nil {
		e.t.Fatalf("server refused the snapshot: %v", err)
	}
	e.waitAcked(gen)
}

func (e *env) waitAcked(gen uint64) {
	e.t.Helper()
	if e.xds.AckedGeneration(fleetName) >= gen {
		return
	}
	timeout := time.After(20 * time.Second)
	for {
		select {
		case g := <-e.acked:
			if g >= gen {
				return
			}
		case <-timeout:
			e.t.Fatalf("the proxy did not ACK generation %d (acked %d; NACKs %v)", gen, e.xds.AckedGeneration(fleetName), e.xds.NACKs(fleetName))
		}
	}
}

// backend is a running echo server and where it listens.
type backend struct {
	srv  *echo.Server
	addr netip.AddrPort
}

func startHTTPEcho(t testing.TB, cluster, node, service string) *backend {
	t.Helper()
	s := echo.New(echo.Identity{Cluster: cluster, Node: node, Service: service})
	a, err := s.ServeHTTP("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &backend{srv: s, addr: netip.MustParseAddrPort(a.String())}
}

func (b *backend) endpoint() model.Endpoint {
	return model.Endpoint{Address: b.addr.Addr(), Port: b.addr.Port()}
}

// httpBackend is a model backend of one group with the given echo servers.
func httpBackend(name string, proto model.BackendProtocol, bs ...*backend) model.Backend {
	g := model.EndpointGroup{Cluster: "a"}
	for _, b := range bs {
		g.Endpoints = append(g.Endpoints, b.endpoint())
	}
	return model.Backend{Name: name, Protocol: proto, Groups: []model.EndpointGroup{g}}
}

// client sends requests to one listener address whatever the URL's host says,
// like curl --resolve.
func client(to string, tlsConfig *tls.Config) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) { return d.DialContext(ctx, network, to) }
	return &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{
			DialContext: dial, TLSClientConfig: tlsConfig, ForceAttemptHTTP2: tlsConfig != nil,
			DisableCompression: true,
		},
	}
}

type result struct {
	status int
	header http.Header
	reply  echo.Reply
	body   string
}

func do(t *testing.T, c *http.Client, req *http.Request) result {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := result{status: resp.StatusCode, header: resp.Header, body: string(b)}
	if resp.Header.Get("X-Echo-Node") != "" {
		if err := json.Unmarshal(b, &r.reply); err != nil {
			t.Fatalf("echo reply %q: %v", b, err)
		}
	}
	return r
}

func get(t *testing.T, c *http.Client, url string, header ...string) result {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return do(t, c, req)
}

// ca issues certificates for tests.
type ca struct{ *testcerts.CA }

func newCA(t *testing.T) *ca {
	t.Helper()
	c, err := testcerts.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	return &ca{c}
}

// issue returns a model certificate for names, with serial as its identity.
func (c *ca) issue(t *testing.T, name string, names ...string) (model.Certificate, *big.Int) {
	t.Helper()
	cert, key, sn, err := c.Issue(names...)
	if err != nil {
		t.Fatal(err)
	}
	return model.Certificate{Name: name, CertPEM: string(cert), KeyPEM: string(key)}, sn
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprintf("must: %v", err))
	}
	return v
}
