package echo

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

var id = Identity{Cluster: "tenant-a", Node: "node-1", Service: "default/web"}

func TestTCPIdentityThenEcho(t *testing.T) {
	s := New(id)
	t.Cleanup(func() { _ = s.Close() })
	addr, err := s.ServeTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseLine(line)
	if err != nil || got != id {
		t.Fatalf("identity %q = %+v, %v", line, got, err)
	}
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		t.Fatal(err)
	}
	if back, _ := r.ReadString('\n'); back != "ping\n" {
		t.Fatalf("echo = %q", back)
	}
}

func TestUDPAnswersEachDatagram(t *testing.T) {
	s := New(id)
	t.Cleanup(func() { _ = s.Close() })
	addr, err := s.ServeUDP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("udp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1024)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if want := id.Line() + "hello"; string(buf[:n]) != want {
		t.Fatalf("reply %q, want %q", buf[:n], want)
	}
}

func TestHTTPReplyAndProxyProtocol(t *testing.T) {
	s := New(id)
	t.Cleanup(func() { _ = s.Close() })
	addr, err := s.ServeHTTP("127.0.0.1:0", true)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	req := "PROXY TCP4 127.0.0.9 127.0.0.1 5555 80\r\nGET /a?status=418 HTTP/1.1\r\nHost: web.example.com\r\nX-Test: 1\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rep Reply
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 418 || rep.Identity != id || rep.Host != "web.example.com" || rep.Path != "/a" ||
		rep.Headers["X-Test"][0] != "1" || !strings.HasPrefix(rep.ProxyProtocol, "PROXY TCP4 127.0.0.9") {
		t.Fatalf("status %d reply %+v", resp.StatusCode, rep)
	}
}

func TestFleetStartStop(t *testing.T) {
	f := NewFleet()
	t.Cleanup(func() { _ = f.Close() })
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	if err := f.Start("n1:web", id, "tcp", addr); err != nil {
		t.Fatal(err)
	}
	if err := f.Start("bad", id, "sctp", "127.0.0.1:0"); err == nil {
		t.Fatal("unknown protocol accepted")
	}
	if k := f.Keys(); len(k) != 1 || k[0] != "n1:web" {
		t.Fatalf("keys %v", k)
	}
	if err := f.Stop("n1:web"); err != nil {
		t.Fatal(err)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Fatal("stopped backend still accepts")
	}
}

func TestGRPCHealthNamesTheBackend(t *testing.T) {
	s := New(Identity{Cluster: "a", Node: "n1", Service: "default/g"})
	defer s.Close()
	addr, err := s.ServeGRPC("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(conn)
	if r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "a/n1/default/g"}); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("own name: %v %v", r, err)
	}
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "b/n1/default/g"}); status.Code(err) != codes.NotFound {
		t.Fatalf("another backend's name: %v, want NotFound", err)
	}
}

func TestSetHTTPStatusForcesEveryAnswer(t *testing.T) {
	s := New(id)
	t.Cleanup(func() { _ = s.Close() })
	addr, err := s.ServeHTTP("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	get := func() (int, Identity) {
		t.Helper()
		resp, err := c.Get("http://" + addr.String() + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var rep Reply
		if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, rep.Identity
	}
	if code, got := get(); code != 200 || got != id {
		t.Fatalf("before: status %d from %+v", code, got)
	}
	s.SetHTTPStatus(503)
	if code, got := get(); code != 503 || got != id {
		t.Fatalf("forced: status %d from %+v, want 503 from %+v", code, got, id)
	}
	s.SetHTTPStatus(0)
	if code, _ := get(); code != 200 {
		t.Fatalf("restored: status %d, want 200", code)
	}
}
