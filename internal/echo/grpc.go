package echo

import (
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// GRPCService is the health-service name under which a gRPC echo reports
// SERVING: a client that asks for it learns which backend answered, because
// every other backend answers NOT_FOUND.
func (id Identity) GRPCService() string { return id.Cluster + "/" + id.Node + "/" + id.Service }

// ServeGRPC listens on addr and serves the standard gRPC health service
// (h2c), SERVING for "" and for s.ID.GRPCService().
func (s *Server) ServeGRPC(addr string) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	g := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus(s.ID.GRPCService(), healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(g, hs)
	s.track(grpcCloser{g})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = g.Serve(ln)
	}()
	return ln.Addr(), nil
}

type grpcCloser struct{ g *grpc.Server }

func (c grpcCloser) Close() error { c.g.Stop(); return nil }
