package xdstransport

import (
	"context"
	"errors"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/fleetlb/fleetlb/internal/pki"
)

// PeerFleet is the fleet the verified client certificate of a stream names:
// the one identity the xDS and load-report services trust.
func PeerFleet(ctx context.Context) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", errors.New("no peer information")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return "", errors.New("the connection is not TLS")
	}
	if len(info.State.VerifiedChains) == 0 || len(info.State.PeerCertificates) == 0 {
		return "", errors.New("no verified client certificate")
	}
	return pki.FleetOf(info.State.PeerCertificates[0])
}
