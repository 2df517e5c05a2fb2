package featuretests

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/fleetlb/fleetlb/internal/model"
)

func fwd(backend string) *model.Forward {
	return &model.Forward{Backends: []model.WeightedBackend{{Backend: backend, Weight: 1}}}
}

func prefix(p string) model.Match { return model.Match{PathType: model.PathPrefix, Path: p} }

// startGRPCHealth runs a real gRPC server (the standard health service) on loopback.
func startGRPCHealth(t *testing.T) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("fleetlb.echo", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(g, hs)
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	return &backend{addr: netip.MustParseAddrPort(ln.Addr().String())}
}

// TestHTTPRouting drives every routing feature of the model through the translator,
// the xDS server and the proxy, with real requests to echo backends.
func TestHTTPRouting(t *testing.T) {
	web := startHTTPEcho(t, "a", "web-1", "web")
	v2 := startHTTPEcho(t, "a", "v2-1", "web-v2")
	canary := startHTTPEcho(t, "a", "canary-1", "canary")
	wild := startHTTPEcho(t, "a", "wild-1", "wild")
	grpcBackend := startGRPCHealth(t)

	vip := netip.MustParseAddr("127.0.31.1")
	f := &model.Fleet{
		Name: fleetName,
		HTTP: &model.SharedListener{VIP: vip, Port: 8080},
		Backends: []model.Backend{
			httpBackend("web", model.BackendHTTP1, web),
			httpBackend("v2", model.BackendHTTP1, v2),
			httpBackend("canary", model.BackendHTTP1, canary),
			httpBackend("wild", model.BackendHTTP1, wild),
			httpBackend("grpc", model.BackendGRPC, grpcBackend),
		},
		VirtualHosts: []model.VirtualHost{
			{Name: "app", Hostnames: []string{"app.a.example.com"}, Routes: []model.Route{
				{Name: "exact", Match: model.Match{PathType: model.PathExact, Path: "/exact"}, Forward: fwd("v2")},
				{Name: "regex", Match: model.Match{PathType: model.PathRegex, Path: "/items/[0-9]+"}, Forward: fwd("v2")},
				{Name: "header", Match: model.Match{PathType: model.PathPrefix, Path: "/",
					Headers: []model.StringMatch{{Name: "X-Canary", Type: model.StringExact, Value: "yes"}}}, Forward: fwd("canary")},
				{Name: "method", Match: model.Match{PathType: model.PathPrefix, Path: "/", Method: "POST"}, Forward: fwd("v2")},
				{Name: "query", Match: model.Match{PathType: model.PathPrefix, Path: "/",
					Query: []model.StringMatch{{Name: "v", Type: model.StringRegex, Value: "[2-3]"}}}, Forward: fwd("v2")},
				{Name: "redirect", Match: prefix("/old"), Redirect: &model.Redirect{Scheme: "https", Port: 8443, PrefixPath: "/new", StatusCode: 301}},
				{Name: "rewrite-prefix", Match: prefix("/api"), Forward: &model.Forward{
					Backends: []model.WeightedBackend{{Backend: "web", Weight: 1}}, RewritePrefixPath: "/v1", RewriteHost: "internal.example"}},
				{Name: "strip-prefix", Match: prefix("/strip-prefix"), Forward: &model.Forward{
					Backends: []model.WeightedBackend{{Backend: "web", Weight: 1}}, RewritePrefixPath: "/"}},
				{Name: "rewrite-full", Match: model.Match{PathType: model.PathExact, Path: "/status"}, Forward: &model.Forward{
					Backends: []model.WeightedBackend{{Backend: "web", Weight: 1}}, RewriteFullPath: "/healthz"}},
				{Name: "headers", Match: prefix("/hdr"), Forward: &model.Forward{
					Backends: []model.WeightedBackend{{Backend: "web", Weight: 1}},
					RequestHeaders: model.HeaderChanges{
						Set: []model.Header{{Name: "X-Env", Value: "prod"}}, Add: []model.Header{{Name: "X-Trace", Value: "fleetlb"}},
						Remove: []string{"X-Debug"}},
					ResponseHeaders: model.HeaderChanges{Set: []model.Header{{Name: "Cache-Control", Value: "no-store"}}, Remove: []string{"Content-Type"}},
				}},
				{Name: "timeout", Match: prefix("/slow"), Forward: &model.Forward{
					Backends: []model.WeightedBackend{{Backend: "web", Weight: 1}}, Timeout: model.Duration(300 * time.Millisecond)}},
				{Name: "split", Match: prefix("/split"), Forward: &model.Forward{
					Backends: []model.WeightedBackend{{Backend: "web", Weight: 50}, {Backend: "canary", Weight: 50}}}},
				{Name: "default", Match: prefix("/"), Forward: fwd("web")},
			}},
			{Name: "wild", Hostnames: []string{"*.a.example.com"}, Routes: []model.Route{{Name: "all", Match: prefix("/"), Forward: fwd("wild")}}},
			{Name: "grpc", Hostnames: []string{"grpc.a.example.com"}, Routes: []model.Route{{Name: "all", Match: prefix("/"), Forward: fwd("grpc")}}},
		},
	}
	e := newEnv(t, true)
	e.apply(f)
	to := netip.AddrPortFrom(vip, 8080).String()
	c := client(to, nil)
	base := "http://app.a.example.com:8080"

	node := func(r result) string { return r.reply.Node }
	cases := []struct {
		name, method, path string
		header             []string
		want               string
	}{
		{"default route", "GET", "/", nil, "web-1"},
		{"exact path", "GET", "/exact", nil, "v2-1"},
		{"exact path is not a prefix", "GET", "/exact/more", nil, "web-1"},
		{"regex matches the whole path", "GET", "/items/42", nil, "v2-1"},
		{"regex does not match a part", "GET", "/items/42x", nil, "web-1"},
		{"header match", "GET", "/", []string{"X-Canary", "yes"}, "canary-1"},
		{"header value must be exact", "GET", "/", []string{"X-Canary", "yess"}, "web-1"},
		{"method match", "POST", "/", nil, "v2-1"},
		{"query regex match", "GET", "/?v=3", nil, "v2-1"},
		{"query regex miss", "GET", "/?v=4", nil, "web-1"},
		{"first matching route wins", "POST", "/", []string{"X-Canary", "yes"}, "canary-1"},
		{"dot segments are normalized", "GET", "/x/../exact", nil, "v2-1"},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest(tc.method, base+tc.path, nil)
		for i := 0; i+1 < len(tc.header); i += 2 {
			req.Header.Set(tc.header[i], tc.header[i+1])
		}
		if r := do(t, c, req); r.status != 200 || node(r) != tc.want {
			t.Errorf("%s: %s %s went to %q (status %d), want %q", tc.name, tc.method, tc.path, node(r), r.status, tc.want)
		}
	}

	t.Run("forwarded headers", func(t *testing.T) {
		r := get(t, c, base+"/", "X-Forwarded-For", "203.0.113.9")
		h := r.reply.Headers
		if got := strings.Join(h["X-Forwarded-For"], ","); got != "203.0.113.9, 127.0.0.1" {
			t.Errorf("X-Forwarded-For = %q, want the client's list with the peer appended", got)
		}
		if got := h["X-Forwarded-Proto"]; len(got) != 1 || got[0] != "http" {
			t.Errorf("X-Forwarded-Proto = %v", got)
		}
		if len(h["X-Request-Id"]) != 1 || len(h["X-Request-Id"][0]) != 32 {
			t.Errorf("X-Request-Id = %v, want one generated id", h["X-Request-Id"])
		}
		if r.reply.Host != "app.a.example.com:8080" {
			t.Errorf("Host = %q, want the client's unchanged", r.reply.Host)
		}
	})
	t.Run("virtual host precedence", func(t *testing.T) {
		if r := get(t, c, "http://x.a.example.com:8080/"); node(r) != "wild-1" {
			t.Errorf("x.a.example.com went to %q, want the wildcard host", node(r))
		}
		if r := get(t, c, "http://APP.A.example.com:8080/exact"); node(r) != "v2-1" {
			t.Errorf("host matching must ignore case; went to %q", node(r))
		}
		if r := get(t, c, "http://a.example.com:8080/"); r.status != 404 {
			t.Errorf("a wildcard must not match the bare domain: status %d", r.status)
		}
		if r := get(t, c, "http://other.example.org/"); r.status != 404 {
			t.Errorf("unknown host: status %d, want 404", r.status)
		}
	})
	t.Run("redirect", func(t *testing.T) {
		r := get(t, c, base+"/old/page?x=1")
		if r.status != 301 || r.header.Get("Location") != "https://app.a.example.com:8443/new/page?x=1" {
			t.Errorf("redirect: %d Location %q", r.status, r.header.Get("Location"))
		}
	})
	t.Run("rewrites", func(t *testing.T) {
		r := get(t, c, base+"/api/users?id=7")
		if r.reply.Path != "/v1/users" || r.reply.Query != "id=7" || r.reply.Host != "internal.example" {
			t.Errorf("prefix+host rewrite: path %q query %q host %q", r.reply.Path, r.reply.Query, r.reply.Host)
		}
		if r := get(t, c, base+"/apix"); r.reply.Path != "/apix" {
			t.Errorf("/apix must not match the /api prefix rule: path %q", r.reply.Path)
		}
		// Gateway API ReplacePrefixMatch "/": the prefix goes, one slash stays.
		for path, want := range map[string]string{"/strip-prefix/three": "/three", "/strip-prefix": "/", "/strip-prefix/": "/"} {
			if r := get(t, c, base+path); r.reply.Path != want {
				t.Errorf("strip prefix %s: backend got path %q, want %q", path, r.reply.Path, want)
			}
		}
		if r := get(t, c, base+"/status"); r.reply.Path != "/healthz" {
			t.Errorf("full path rewrite: path %q", r.reply.Path)
		}
	})
	t.Run("header changes", func(t *testing.T) {
		r := get(t, c, base+"/hdr", "X-Debug", "1", "X-Trace", "client", "X-Env", "dev")
		h := r.reply.Headers
		if h["X-Debug"] != nil || strings.Join(h["X-Env"], ",") != "prod" || strings.Join(h["X-Trace"], ",") != "client,fleetlb" {
			t.Errorf("request headers upstream: X-Debug %v X-Env %v X-Trace %v", h["X-Debug"], h["X-Env"], h["X-Trace"])
		}
		if r.header.Get("Cache-Control") != "no-store" || r.header.Get("Content-Type") != "" {
			t.Errorf("response headers: Cache-Control %q Content-Type %q", r.header.Get("Cache-Control"), r.header.Get("Content-Type"))
		}
	})
	t.Run("route timeout", func(t *testing.T) {
		if r := get(t, c, base+"/slow?delay=5s"); r.status != http.StatusGatewayTimeout {
			t.Errorf("slow upstream: status %d, want 504", r.status)
		}
		if r := get(t, c, base+"/slow?delay=10ms"); r.status != 200 {
			t.Errorf("fast upstream: status %d", r.status)
		}
	})
	t.Run("weighted backends", func(t *testing.T) {
		seen := map[string]int{}
		for range 200 {
			seen[node(get(t, c, base+"/split"))]++
		}
		// 50/50 over 200: each side is outside [60,140] with probability < 1e-8.
		if seen["web-1"] < 60 || seen["canary-1"] < 60 || seen["web-1"]+seen["canary-1"] != 200 {
			t.Errorf("50/50 split gave %v", seen)
		}
	})
	t.Run("h2c downstream", func(t *testing.T) {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		hc := client(to, nil)
		hc.Transport.(*http.Transport).Protocols = &p
		resp, err := hc.Get(base + "/exact")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.Header.Get("X-Echo-Node") != "v2-1" {
			t.Errorf("h2c: proto %s node %q", resp.Proto, resp.Header.Get("X-Echo-Node"))
		}
	})
	t.Run("grpc pass-through", func(t *testing.T) {
		conn, err := grpc.NewClient(to, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("grpc.a.example.com"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		hc := healthpb.NewHealthClient(conn)
		res, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "fleetlb.echo"})
		if err != nil || res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("Check through the proxy: %v %v", res, err)
		}
		// A trailers-only error must come back with its status code.
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"}); status.Code(err) != codes.NotFound {
			t.Errorf("unknown service: %v, want NotFound", err)
		}
		// A server stream stays open and delivers messages.
		w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: "fleetlb.echo"})
		if err != nil {
			t.Fatal(err)
		}
		if m, err := w.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("Watch: %v %v", m, err)
		}
	})
}
