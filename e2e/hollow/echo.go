package hollow

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	pb "sigs.k8s.io/gateway-api/conformance/echo-basic/grpcechoserver"
	"sigs.k8s.io/gateway-api/conformance/utils/roundtripper"
)

// The suite's backends all run one image, gateway-api's echo-basic; what a
// hollow Pod of that image serves is chosen by its environment, as in the
// image's main: GRPC_ECHO_SERVER selects the gRPC echo on HTTP_PORT,
// otherwise HTTP/1.1 on HTTP_PORT and h2c on H2C_PORT. The TCP and UDP echo
// modes and HTTPS (TLS_SERVER_CERT from a Secret volume) are not played: no
// profile fleetlb claims reaches them.

// echoBasicImage says whether a container runs gateway-api's echo-basic.
func echoBasicImage(image string) bool {
	name, _, _ := strings.Cut(image[strings.LastIndex(image, "/")+1:], ":")
	name, _, _ = strings.Cut(name, "@")
	return name == "echo-basic"
}

// PodContext is who answers: echo-basic's NAMESPACE, INGRESS_NAME,
// SERVICE_NAME and POD_NAME.
type PodContext struct {
	Namespace, Ingress, Service, Pod string
}

// Reply is echo-basic's JSON answer: the suite's own CapturedRequest (what it
// parses) plus the two fields it does not read.
type Reply struct {
	roundtripper.CapturedRequest
	Ingress string `json:"ingress"`
	Service string `json:"service"`
}

// echoApps are the servers one echo-basic container runs, by container port.
func echoApps(env map[string]string, pc PodContext) map[int32]app {
	port := func(key string, def int32) int32 {
		if p, err := strconv.ParseInt(env[key], 10, 32); err == nil && p > 0 {
			return int32(p)
		}
		return def
	}
	httpPort := port("HTTP_PORT", 3000)
	if env["GRPC_ECHO_SERVER"] != "" {
		return map[int32]app{httpPort: grpcApp(pc)}
	}
	if env["TCP_ECHO_SERVER"] != "" || env["UDP_ECHO_SERVER"] != "" {
		return nil
	}
	h := echoHandler(pc, strconv.Itoa(int(httpPort)))
	h2c := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 && r.Header.Get("Upgrade") != "h2c" {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte("Expected h2c request"))
			return
		}
		h.ServeHTTP(w, r)
	})
	return map[int32]app{
		httpPort:               httpApp(h, false),
		port("H2C_PORT", 3001): httpApp(h2c, true),
	}
}

var statusPath = regexp.MustCompile(`^/status/(\d\d\d)$`)

// echoHandler answers like echo-basic: /health, /status/<code>, and
// everything else echoed as a Reply, after ?delay=<duration> if asked.
func echoHandler(pc PodContext, httpPort string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("OK")) })
	mux.HandleFunc("/status/", func(w http.ResponseWriter, r *http.Request) {
		code := http.StatusBadRequest
		if m := statusPath.FindStringSubmatch(r.RequestURI); m != nil {
			code, _ = strconv.Atoi(m[1])
		}
		w.WriteHeader(code)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if d := r.FormValue("delay"); d != "" {
			wait, err := time.ParseDuration(d)
			if err != nil {
				writeError(w, err)
				return
			}
			t := time.NewTimer(wait)
			defer t.Stop()
			select {
			case <-t.C:
			case <-r.Context().Done():
				return
			}
		}
		reply := Reply{
			CapturedRequest: roundtripper.CapturedRequest{
				Path: r.RequestURI, Host: r.Host, Method: r.Method, Protocol: r.Proto, Headers: r.Header,
				HTTPPort: httpPort, Namespace: pc.Namespace, Pod: pc.Pod,
			},
			Ingress: pc.Ingress, Service: pc.Service,
		}
		b, err := json.MarshalIndent(reply, "", " ")
		if err != nil {
			writeError(w, err)
			return
		}
		setEchoResponseHeaders(w, r.Header)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		_, _ = w.Write(b)
	})
	// echo-basic collapses "//" before routing, and echoes the raw URI.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.URL.Path = strings.ReplaceAll(r.URL.Path, "//", "/")
		mux.ServeHTTP(w, r)
	})
}

// setEchoResponseHeaders sets the response headers a request asks for in
// X-Echo-Set-Header ("Name: value, Other: value"), keeping their case.
func setEchoResponseHeaders(w http.ResponseWriter, h http.Header) {
	for _, list := range h["X-Echo-Set-Header"] {
		for kv := range strings.SplitSeq(list, ",") {
			name, value, _ := strings.Cut(strings.TrimSpace(kv), ":")
			if len(w.Header()[name]) == 0 {
				w.Header()[name] = []string{value}
			} else {
				w.Header()[name][0] += "," + strings.TrimSpace(value)
			}
		}
	}
}

func writeError(w http.ResponseWriter, err error) {
	b, _ := json.Marshal(struct {
		Message string `json:"message"`
	}{err.Error()})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusInternalServerError)
	_, _ = w.Write(b)
}

// grpcEcho is echo-basic's gRPC echo service (plaintext): Echo and EchoTwo
// answer with the method, the request metadata and the Pod; EchoThree is
// left unimplemented, as the suite expects.
type grpcEcho struct {
	pb.UnimplementedGrpcEchoServer
	pc *pb.Context
}

func (g *grpcEcho) Echo(ctx context.Context, _ *pb.EchoRequest) (*pb.EchoResponse, error) {
	return g.echo(ctx, "Echo")
}

func (g *grpcEcho) EchoTwo(ctx context.Context, _ *pb.EchoRequest) (*pb.EchoResponse, error) {
	return g.echo(ctx, "EchoTwo")
}

func (g *grpcEcho) echo(ctx context.Context, method string) (*pb.EchoResponse, error) {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return nil, errors.New("no metadata in the request")
	}
	a := &pb.Assertions{Context: g.pc}
	a.FullyQualifiedMethod = "/" + string(pb.File_grpcecho_proto.Services().ByName("GrpcEcho").FullName()) + "/" + method
	for k, vs := range md {
		for _, v := range vs {
			if k == ":authority" {
				a.Authority = v
			}
			a.Headers = append(a.Headers, &pb.Header{Key: k, Value: v})
		}
	}
	return &pb.EchoResponse{Assertions: a}, nil
}

func grpcApp(pc PodContext) app {
	return func(l *connListener) func() {
		s := grpc.NewServer()
		pb.RegisterGrpcEchoServer(s, &grpcEcho{pc: &pb.Context{Namespace: pc.Namespace, Ingress: pc.Ingress, ServiceName: pc.Service, Pod: pc.Pod}})
		go func() { _ = s.Serve(l) }()
		return s.Stop
	}
}

// httpApp serves h on the connections kube-proxy hands over: HTTP/1.1, and
// with h2c also HTTP/2 with prior knowledge.
func httpApp(h http.Handler, h2c bool) app {
	return func(l *connListener) func() {
		s := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		if h2c {
			s.Protocols = new(http.Protocols)
			s.Protocols.SetHTTP1(true)
			s.Protocols.SetUnencryptedHTTP2(true)
		}
		go func() { _ = s.Serve(l) }()
		return func() { _ = s.Close() }
	}
}
