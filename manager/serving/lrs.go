package serving

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	loadstatsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/fleetlb/fleetlb/internal/xdstransport"
)

// DefaultReportInterval is the load_reporting_interval the server asks for:
// a failover shows within about a second.
const DefaultReportInterval = time.Second

// Server is the LRS server. It trusts what proxies report, so, like the xDS
// server, it takes a stream only from a client whose verified certificate
// names the fleet its node.cluster claims (unless Insecure).
type Server struct {
	Loads *Loads
	// Insecure trusts node.cluster (plaintext xDS, --xds-insecure).
	Insecure bool
	// FleetExists reports whether a ProxyFleet exists; nil accepts every name.
	FleetExists func(fleet string) bool
	// Interval is the load_reporting_interval (DefaultReportInterval when 0).
	Interval time.Duration
	Log      logr.Logger

	streams atomic.Uint64
}

// Register adds the LRS service to a gRPC server (the xDS one).
func (s *Server) Register(g grpc.ServiceRegistrar) {
	loadstatsv3.RegisterLoadReportingServiceServer(g, s)
}

// StreamLoadStats implements loadstatsv3.LoadReportingServiceServer.
func (s *Server) StreamLoadStats(stream loadstatsv3.LoadReportingService_StreamLoadStatsServer) error {
	identity := ""
	if !s.Insecure {
		var err error
		if identity, err = xdstransport.PeerFleet(stream.Context()); err != nil {
			return status.Errorf(codes.Unauthenticated, "load reports need a fleet client certificate: %v", err)
		}
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	fleet := first.GetNode().GetCluster()
	switch {
	case fleet == "":
		return status.Error(codes.InvalidArgument, "node.cluster (the fleet) is empty")
	case !s.Insecure && fleet != identity:
		return status.Errorf(codes.PermissionDenied, "node.cluster %q differs from the fleet %q the client certificate names", fleet, identity)
	case s.FleetExists != nil && !s.FleetExists(fleet):
		return status.Errorf(codes.PermissionDenied, "fleet %q does not exist", fleet)
	}
	id := s.streams.Add(1)
	defer s.Loads.Forget(id)
	interval := s.Interval
	if interval <= 0 {
		interval = DefaultReportInterval
	}
	// Every cluster: a proxy reports only those that carried traffic, and
	// only global backends are kept.
	if err := stream.Send(&loadstatsv3.LoadStatsResponse{SendAllClusters: true, LoadReportingInterval: durationpb.New(interval)}); err != nil {
		return err
	}
	s.Log.V(1).Info("load reports started", "fleet", fleet, "node", first.GetNode().GetId())
	s.Loads.Record(fleet, id, first.GetClusterStats())
	for {
		req, err := stream.Recv()
		if err != nil {
			if errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled {
				return nil
			}
			return err
		}
		if n := req.GetNode(); n != nil && n.GetCluster() != "" && n.GetCluster() != fleet {
			return status.Errorf(codes.PermissionDenied, "node.cluster changed from %q to %q", fleet, n.GetCluster())
		}
		s.Loads.Record(fleet, id, req.GetClusterStats())
	}
}
