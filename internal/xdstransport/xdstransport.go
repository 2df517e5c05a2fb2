// Package xdstransport is how the manager's xDS server and its proxies
// connect: mutual TLS on both ends (certificates re-read on every handshake,
// so a rotation needs no restart and never touches an open stream), the gRPC
// message-size limit and keepalives.
package xdstransport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

// MaxMessageBytes bounds one xDS message in both directions, on the manager,
// fleetlb-proxy and in Envoy's bootstrap. gRPC's default of 4 MiB is below
// what a fleet at its tenants' limits can need (all of a fleet's resources of
// one type travel in one state-of-the-world response); 64 MiB is above the
// largest admissible configuration and still bounds what one peer can make
// the other buffer.
const MaxMessageBytes = 64 << 20

// ServerTLS is the xDS server's TLS configuration: a client certificate that
// chains to the CA is required, and the serving certificate and CA come from
// current on every handshake.
func ServerTLS(current func() (*tls.Certificate, *x509.CertPool, error)) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, pool, err := current()
			if err != nil {
				return nil, fmt.Errorf("xDS serving certificate: %w", err)
			}
			return &tls.Config{
				MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*cert},
				ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool,
			}, nil
		},
	}
}

// ServerOptions are the xDS gRPC server's options; nil creds serve plaintext.
func ServerOptions(creds credentials.TransportCredentials) []grpc.ServerOption {
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	return []grpc.ServerOption{
		grpc.Creds(creds),
		grpc.MaxRecvMsgSize(MaxMessageBytes), grpc.MaxSendMsgSize(MaxMessageBytes),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 15 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	}
}

// ClientFiles are a proxy's certificate, key and the CA that signs the
// server's certificate, as files (a mounted Secret), and the name the
// server's certificate must carry.
type ClientFiles struct {
	CertFile, KeyFile, CAFile string
	// ServerName is verified against the server certificate (and sent as SNI).
	ServerName string
}

func (f ClientFiles) config() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("xDS client certificate: %w", err)
	}
	ca, err := os.ReadFile(f.CAFile)
	if err != nil {
		return nil, fmt.Errorf("xDS CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("xDS CA %s holds no PEM certificate", f.CAFile)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.ServerName, RootCAs: pool, Certificates: []tls.Certificate{cert}}, nil
}

// Validate reads the files once, so a bad flag fails at start.
func (f ClientFiles) Validate() error {
	if f.CertFile == "" || f.KeyFile == "" || f.CAFile == "" || f.ServerName == "" {
		return errors.New("mTLS needs a client certificate, key, CA file and server name")
	}
	_, err := f.config()
	return err
}

// ClientCredentials read the files on every dial: a renewed certificate is
// used from the next connection on.
func ClientCredentials(f ClientFiles) credentials.TransportCredentials {
	return &fileCredentials{files: f}
}

type fileCredentials struct{ files ClientFiles }

func (c *fileCredentials) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	cfg, err := c.files.config()
	if err != nil {
		return nil, nil, err
	}
	return credentials.NewTLS(cfg).ClientHandshake(ctx, authority, conn)
}

func (c *fileCredentials) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("xdstransport: client credentials cannot serve")
}

func (c *fileCredentials) Info() credentials.ProtocolInfo {
	return credentials.NewTLS(&tls.Config{}).Info()
}

func (c *fileCredentials) Clone() credentials.TransportCredentials {
	return &fileCredentials{files: c.files}
}

// OverrideServerName is deprecated in gRPC; the name is ClientFiles.ServerName.
func (c *fileCredentials) OverrideServerName(string) error { return nil }

// DialOptions are a proxy's options for its xDS connection; nil creds dial plaintext.
func DialOptions(creds credentials.TransportCredentials) []grpc.DialOption {
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	return []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageBytes), grpc.MaxCallSendMsgSize(MaxMessageBytes)),
		// Notice a dead server quickly, like Envoy's keepalive on the ADS cluster.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	}
}
