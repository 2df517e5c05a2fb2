package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/fleetlb/fleetlb/internal/pki"
	"github.com/fleetlb/fleetlb/internal/xdstransport"
)

// testPKI is a real CA with a rotatable serving certificate for 127.0.0.1 and localhost.
type testPKI struct {
	ca      *pki.CA
	serving atomic.Pointer[tls.Certificate]
}

const serverName = "localhost"

func newPKI(t testing.TB) *testPKI {
	t.Helper()
	ca, err := pki.NewCA("test xDS CA", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{ca: ca}
	p.rotateServing(t)
	return p
}

// rotateServing issues a new serving certificate and returns its serial.
func (p *testPKI) rotateServing(t testing.TB) *big.Int {
	t.Helper()
	kp, err := p.ca.IssueServer([]string{serverName, "127.0.0.1"}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, err := kp.TLS()
	if err != nil {
		t.Fatal(err)
	}
	p.serving.Store(c)
	return kp.Cert.SerialNumber
}

func (p *testPKI) current() (*tls.Certificate, *x509.CertPool, error) {
	return p.serving.Load(), p.ca.Pool(), nil
}

// clientTLS is a proxy's TLS configuration with a certificate for fleet, issued by p's CA.
func (p *testPKI) clientTLS(t testing.TB, fleet string) *tls.Config {
	t.Helper()
	return clientTLSFrom(t, p.ca, p.ca, fleet)
}

// clientTLSFrom trusts serverCA and presents a certificate for fleet issued by clientCA.
func clientTLSFrom(t testing.TB, serverCA, clientCA *pki.CA, fleet string) *tls.Config {
	t.Helper()
	kp, err := clientCA.IssueFleetClient(fleet, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, err := kp.TLS()
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{ServerName: serverName, RootCAs: serverCA.Pool(), Certificates: []tls.Certificate{*c}}
}

// refusedSotW opens a SotW stream on conn, sends a first request naming
// cluster, and returns the error the stream ends with; it fails the test if
// any response arrives.
func refusedSotW(t *testing.T, conn *grpc.ClientConn, cluster string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "rogue", Cluster: cluster}, TypeUrl: resource.ClusterType}); err != nil {
		_, err = st.Recv() // the stream's status
		return err
	}
	r, err := st.Recv()
	if err == nil {
		t.Fatalf("a refused stream received %d resources of %s", len(r.Resources), r.TypeUrl)
	}
	return err
}

func refusedDelta(t *testing.T, conn *grpc.ClientConn, cluster string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "rogue", Cluster: cluster}, TypeUrl: resource.ClusterType}); err != nil {
		_, err = st.Recv()
		return err
	}
	r, err := st.Recv()
	if err == nil {
		t.Fatalf("a refused delta stream received %d resources of %s", len(r.Resources), r.TypeUrl)
	}
	return err
}

func wantCode(t *testing.T, what string, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: stream ended with %v, want %s", what, err, code)
	}
}

// TestStreamGetsTheFleetOfItsCertificate: fleets a and b both have
// snapshots; a proxy with a certificate for a gets a's, and claiming b with
// that certificate is refused before anything is sent, over SotW and delta.
func TestStreamGetsTheFleetOfItsCertificate(t *testing.T) {
	h := startWith(t, Options{FleetExists: func(f string) bool { return f == "a" || f == "b" }})
	h.srv.Set("a", clusters(2, time.Second))
	h.srv.Set("b", clusters(7, time.Second))
	asA := h.dial(t, h.pki.clientTLS(t, "a"))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(asA).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &sotwClient{t: t, stream: st}
	c.send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "pa", Cluster: "a"}, TypeUrl: resource.ClusterType})
	if r := c.recv(); len(r.Resources) != 2 {
		t.Fatalf("fleet a's proxy got %d clusters, want a's 2", len(r.Resources))
	}

	wantCode(t, "certificate for a claiming b (SotW)", refusedSotW(t, asA, "b"), codes.PermissionDenied)
	wantCode(t, "certificate for a claiming b (delta)", refusedDelta(t, asA, "b"), codes.PermissionDenied)
	wantCode(t, "certificate for a, no cluster", refusedSotW(t, asA, ""), codes.PermissionDenied)
	if n := h.srv.ConnectedProxies("b"); n != 0 {
		t.Fatalf("fleet b counts %d proxies after refused streams", n)
	}
	// Only fleet a became a metric label.
	if n := testutil.CollectAndCount(h.srv.metrics.proxies); n != 1 {
		t.Fatalf("connected-proxies gauge has %d series, want 1 (fleet a)", n)
	}
	if testutil.ToFloat64(h.srv.metrics.refused) != 3 {
		t.Fatalf("refused streams counted %v, want 3", testutil.ToFloat64(h.srv.metrics.refused))
	}
}

// TestClusterChangedMidStreamIsRefused: a later request cannot move the stream to another fleet.
func TestClusterChangedMidStreamIsRefused(t *testing.T) {
	h := startWith(t, Options{})
	h.srv.Set(fleet, clusters(1, time.Second))
	c := sotw(t, h, "p1")
	r := c.recv()
	c.send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "p1", Cluster: "other"}, TypeUrl: resource.ClusterType,
		VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce})
	_, err := c.stream.Recv()
	wantCode(t, "node.cluster changed mid-stream", err, codes.PermissionDenied)
}

// TestUnknownFleetIsRefused: a valid certificate for a fleet that does not exist gets nothing.
func TestUnknownFleetIsRefused(t *testing.T) {
	h := startWith(t, Options{FleetExists: func(f string) bool { return f == fleet }})
	conn := h.dial(t, h.pki.clientTLS(t, "gone"))
	wantCode(t, "unknown fleet", refusedSotW(t, conn, "gone"), codes.PermissionDenied)
	if n := testutil.CollectAndCount(h.srv.metrics.proxies); n != 0 {
		t.Fatalf("an unknown fleet became a metric label (%d series)", n)
	}
}

// TestNoOrForeignClientCertificateIsRefused: without a client certificate,
// or with one from another CA, the TLS handshake fails and nothing is sent.
func TestNoOrForeignClientCertificateIsRefused(t *testing.T) {
	h := start(t)
	h.srv.Set(fleet, clusters(1, time.Second))
	noCert := h.dial(t, &tls.Config{ServerName: serverName, RootCAs: h.pki.ca.Pool()})
	if err := refusedSotW(t, noCert, fleet); err == nil {
		t.Fatal("a client without a certificate was served")
	}
	other, err := pki.NewCA("another CA", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	foreign := h.dial(t, clientTLSFrom(t, h.pki.ca, other, fleet))
	if err := refusedDelta(t, foreign, fleet); err == nil {
		t.Fatal("a client with a certificate of another CA was served")
	}
	// A plaintext client cannot even speak to the server.
	plain := h.dial(t, nil)
	if err := refusedSotW(t, plain, fleet); err == nil {
		t.Fatal("a plaintext client was served")
	}
	if n := h.srv.ConnectedProxies(fleet); n != 0 {
		t.Fatalf("%d proxies counted after refused handshakes", n)
	}
}

// TestInsecureServerTrustsNodeCluster: with Insecure (--xds-insecure) the
// fleet is what node.cluster says, and unknown fleets are still refused.
func TestInsecureServerTrustsNodeCluster(t *testing.T) {
	h := startWith(t, Options{Insecure: true, FleetExists: func(f string) bool { return f == fleet }})
	h.srv.Set(fleet, clusters(3, time.Second))
	c := sotw(t, h, "p1")
	if r := c.recv(); len(r.Resources) != 3 {
		t.Fatalf("got %d clusters, want 3", len(r.Resources))
	}
	wantCode(t, "unknown fleet, insecure", refusedSotW(t, h.conn, "nope"), codes.PermissionDenied)
}

// TestServingCertificateRotation: a new serving certificate reaches new
// connections while an open stream keeps receiving updates.
func TestServingCertificateRotation(t *testing.T) {
	h := start(t)
	h.srv.Set(fleet, clusters(1, time.Second))
	c := sotw(t, h, "p1")
	c.ack(c.recv())

	rotated := h.pki.rotateServing(t)
	gen := h.srv.Set(fleet, clusters(2, time.Second))
	r := c.recv()
	if len(r.Resources) != 2 {
		t.Fatalf("the open stream got %d clusters after the rotation, want 2", len(r.Resources))
	}
	c.ack(r)
	waitAcked(t, h.srv, gen)

	var mu sync.Mutex
	var seen *big.Int
	cfg := h.pki.clientTLS(t, fleet)
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		mu.Lock()
		seen = cs.PeerCertificates[0].SerialNumber
		mu.Unlock()
		return nil
	}
	c2 := sotw(t, &harness{srv: h.srv, conn: h.dial(t, cfg)}, "p2")
	if r := c2.recv(); len(r.Resources) != 2 {
		t.Fatalf("new connection got %d clusters, want 2", len(r.Resources))
	}
	mu.Lock()
	defer mu.Unlock()
	if seen == nil || seen.Cmp(rotated) != 0 {
		t.Fatalf("a new connection saw serving certificate %v, want the rotated %v", seen, rotated)
	}
	if n := h.srv.ConnectedProxies(fleet); n != 2 {
		t.Fatalf("%d proxies connected, want the old stream and the new one", n)
	}
}

// TestClientCredentialsFromFiles: a proxy's credentials read from files (a
// mounted Secret) connect, and a renewed certificate written over them is
// used by the next connection.
func TestClientCredentialsFromFiles(t *testing.T) {
	h := start(t)
	h.srv.Set(fleet, clusters(1, time.Second))
	dir := t.TempDir()
	write := func(fleetName string) {
		kp, err := h.pki.ca.IssueFleetClient(fleetName, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		for name, b := range map[string][]byte{"tls.crt": kp.CertPEM, "tls.key": kp.KeyPEM, "ca.crt": h.pki.ca.CertPEM} {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	files := xdstransport.ClientFiles{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"),
		CAFile: filepath.Join(dir, "ca.crt"), ServerName: serverName}
	write(fleet)
	if err := files.Validate(); err != nil {
		t.Fatal(err)
	}
	dial := func() *grpc.ClientConn {
		conn, err := grpc.NewClient(h.addr, xdstransport.DialOptions(xdstransport.ClientCredentials(files))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	c := sotw(t, &harness{srv: h.srv, conn: dial()}, "p1")
	if r := c.recv(); len(r.Resources) != 1 {
		t.Fatalf("got %d clusters, want 1", len(r.Resources))
	}
	// The files now hold a certificate of another fleet: the next
	// connection presents it, and claiming the old fleet is refused.
	write("elsewhere")
	wantCode(t, "re-read certificate", refusedSotW(t, dial(), fleet), codes.PermissionDenied)
}

// TestLargeResponseCrossesTheWire: a state-of-the-world response above
// gRPC's 4 MiB default reaches a proxy dialled with xdstransport's options.
func TestLargeResponseCrossesTheWire(t *testing.T) {
	h := start(t)
	var cs []types.Resource
	long := strings.Repeat("x", 6000)
	for i := range 1000 { // ≈ 6 MB in one response
		cs = append(cs, &clusterv3.Cluster{Name: fmt.Sprintf("c%04d-%s", i, long), ConnectTimeout: durationpb.New(time.Second),
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}})
	}
	h.srv.Set(fleet, map[resource.Type][]types.Resource{resource.ClusterType: cs})
	c := sotw(t, h, "p1")
	r := c.recv()
	if len(r.Resources) != 1000 || proto.Size(r) <= 4<<20 {
		t.Fatalf("got %d clusters in %d bytes, want 1000 in more than 4 MiB", len(r.Resources), proto.Size(r))
	}
}

// TestSotWAndDeltaStreamsAreKeptApart: go-control-plane numbers SotW and
// delta streams separately, so the first of each share ID 1. A delta stream
// of fleet b must not take over the state (and identity) of a SotW stream of
// fleet a.
func TestSotWAndDeltaStreamsAreKeptApart(t *testing.T) {
	h := startWith(t, Options{FleetExists: func(f string) bool { return f == "a" || f == "b" }})
	genA := h.srv.Set("a", clusters(2, time.Second))
	h.srv.Set("b", clusters(3, time.Second))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	sa, err := discoveryv3.NewAggregatedDiscoveryServiceClient(h.dial(t, h.pki.clientTLS(t, "a"))).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a := &sotwClient{t: t, stream: sa}
	a.send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "pa", Cluster: "a"}, TypeUrl: resource.ClusterType})
	ra := a.recv()

	db, err := discoveryv3.NewAggregatedDiscoveryServiceClient(h.dial(t, h.pki.clientTLS(t, "b"))).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "pb", Cluster: "b"}, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	rb, err := db.Recv()
	if err != nil || len(rb.Resources) != 3 {
		t.Fatalf("fleet b's delta proxy got %v (%v), want b's 3 clusters", rb, err)
	}
	if h.srv.ConnectedProxies("a") != 1 || h.srv.ConnectedProxies("b") != 1 {
		t.Fatalf("connected a=%d b=%d, want 1 and 1", h.srv.ConnectedProxies("a"), h.srv.ConnectedProxies("b"))
	}
	// a's stream still has its own identity: claiming b on it is refused,
	// and its ACK counts for a.
	a.ack(ra)
	waitAckedFleet(t, h.srv, "a", genA)
	a.send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "pa", Cluster: "b"}, TypeUrl: resource.ClusterType})
	_, err = a.stream.Recv()
	wantCode(t, "SotW stream of a claiming b", err, codes.PermissionDenied)
}

func waitAckedFleet(t *testing.T, s *Server, fleet string, gen uint64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for s.AckedGeneration(fleet) < gen {
		if time.Now().After(deadline) {
			t.Fatalf("fleet %s never acknowledged generation %d", fleet, gen)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
