// Package pki is the X.509 side of authenticated xDS: a CA (ECDSA P-256),
// the serving certificate of the manager's xDS server, and client
// certificates whose identity names a proxy fleet (URI SAN
// spiffe://fleetlb.io/fleet/<name>). It knows nothing of Kubernetes or gRPC.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"time"
)

const (
	// TrustDomain is the SPIFFE trust domain of fleet identities.
	TrustDomain = "fleetlb.io"
	fleetPath   = "/fleet/"

	// CALifetime, ServingLifetime and ClientLifetime are the default
	// lifetimes; certificates are renewed at two thirds of theirs (RenewAt).
	CALifetime      = 10 * 365 * 24 * time.Hour
	ServingLifetime = 30 * 24 * time.Hour
	ClientLifetime  = 30 * 24 * time.Hour

	// maxBackdate tolerates clocks that are slightly behind the issuer's.
	maxBackdate = 5 * time.Minute
)

// FleetURI is the identity of a fleet's proxies: spiffe://fleetlb.io/fleet/<name>.
func FleetURI(fleet string) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: TrustDomain, Path: fleetPath + fleet}
}

// FleetOf is the fleet a (verified) client certificate names. A certificate
// must carry exactly one URI SAN, and it must be a fleet identity.
func FleetOf(cert *x509.Certificate) (string, error) {
	if cert == nil {
		return "", errors.New("no client certificate")
	}
	if len(cert.URIs) != 1 {
		return "", fmt.Errorf("certificate has %d URI SANs, want exactly one spiffe://%s%s<fleet>", len(cert.URIs), TrustDomain, fleetPath)
	}
	u := cert.URIs[0]
	name, ok := strings.CutPrefix(u.Path, fleetPath)
	if u.Scheme != "spiffe" || u.Host != TrustDomain || !ok || name == "" || strings.Contains(name, "/") ||
		u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("URI SAN %q is not a fleet identity spiffe://%s%s<fleet>", u, TrustDomain, fleetPath)
	}
	return name, nil
}

// KeyPair is an issued certificate with its key, in PEM (key in PKCS#8).
type KeyPair struct {
	Cert    *x509.Certificate
	CertPEM []byte
	KeyPEM  []byte
}

// TLS is the pair as crypto/tls uses it.
func (k *KeyPair) TLS() (*tls.Certificate, error) {
	c, err := tls.X509KeyPair(k.CertPEM, k.KeyPEM)
	if err != nil {
		return nil, err
	}
	c.Leaf = k.Cert
	return &c, nil
}

// CA signs serving and client certificates.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	KeyPEM  []byte
	key     *ecdsa.PrivateKey
}

// Pool trusts the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// NewCA makes a self-signed CA valid from now for lifetime.
func NewCA(commonName string, lifetime time.Duration, now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn, Subject: pkix.Name{CommonName: commonName, Organization: []string{"fleetlb"}},
		NotBefore: now.Add(-backdate(lifetime)), NotAfter: now.Add(lifetime),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	kp, err := pair(der, key)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: kp.Cert, CertPEM: kp.CertPEM, KeyPEM: kp.KeyPEM, key: key}, nil
}

// ParseCA reads a CA back from its PEM certificate and key.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCertificate(certPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	if !cert.IsCA {
		return nil, errors.New("CA certificate is not a CA")
	}
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		return nil, errors.New("CA key: no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		if k, err = x509.ParseECPrivateKey(b.Bytes); err != nil {
			return nil, fmt.Errorf("CA key: %w", err)
		}
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("CA key is a %T, want ECDSA", k)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("CA key does not match the CA certificate")
	}
	return &CA{Cert: cert, CertPEM: certPEM, KeyPEM: keyPEM, key: key}, nil
}

// IssueServer issues the xDS serving certificate for hosts (DNS names or IP addresses).
func (ca *CA) IssueServer(hosts []string, lifetime time.Duration, now time.Time) (*KeyPair, error) {
	if len(hosts) == 0 {
		return nil, errors.New("a serving certificate needs at least one host")
	}
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: hosts[0]}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return ca.issue(tmpl, lifetime, now)
}

// IssueFleetClient issues the client certificate of a fleet's proxies.
func (ca *CA) IssueFleetClient(fleet string, lifetime time.Duration, now time.Time) (*KeyPair, error) {
	if fleet == "" || strings.Contains(fleet, "/") {
		return nil, fmt.Errorf("fleet name %q cannot name an identity", fleet)
	}
	tmpl := &x509.Certificate{
		Subject: pkix.Name{CommonName: "fleet " + fleet, Organization: []string{"fleetlb"}},
		URIs:    []*url.URL{FleetURI(fleet)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return ca.issue(tmpl, lifetime, now)
}

func (ca *CA) issue(tmpl *x509.Certificate, lifetime time.Duration, now time.Time) (*KeyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	if tmpl.SerialNumber, err = serial(); err != nil {
		return nil, err
	}
	tmpl.NotBefore = now.Add(-backdate(lifetime))
	// Never outlive the CA: a chain is only as valid as its issuer.
	tmpl.NotAfter = now.Add(lifetime)
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, err
	}
	return pair(der, key)
}

func pair(der []byte, key *ecdsa.PrivateKey) (*KeyPair, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &KeyPair{
		Cert:    cert,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
	}, nil
}

// backdate is at most a tenth of the lifetime, so it never dominates when
// renewal is reckoned at two thirds of NotBefore..NotAfter.
func backdate(lifetime time.Duration) time.Duration {
	return min(maxBackdate, lifetime/10)
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// ParseCertificate reads the first certificate of a PEM bundle.
func ParseCertificate(certPEM []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(certPEM)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return x509.ParseCertificate(b.Bytes)
}

// RenewAt is when a certificate should be replaced: at two thirds of its
// lifetime, so a missed renewal still leaves a third to notice and retry.
func RenewAt(cert *x509.Certificate) time.Time {
	life := cert.NotAfter.Sub(cert.NotBefore)
	return cert.NotBefore.Add(life * 2 / 3)
}

// Verify checks that a certificate chains to ca for usage at now.
func (ca *CA) Verify(cert *x509.Certificate, usage x509.ExtKeyUsage, now time.Time) error {
	_, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage}})
	return err
}
