package pki

import (
	"crypto/x509"
	"net/url"
	"testing"
	"time"
)

func TestFleetOf(t *testing.T) {
	ok := FleetURI("edge")
	if ok.String() != "spiffe://fleetlb.io/fleet/edge" {
		t.Fatalf("FleetURI = %s", ok)
	}
	for _, c := range []struct {
		uris []string
		want string
	}{
		{[]string{"spiffe://fleetlb.io/fleet/edge"}, "edge"},
		{nil, ""},
		{[]string{"spiffe://fleetlb.io/fleet/edge", "spiffe://fleetlb.io/fleet/core"}, ""},
		{[]string{"spiffe://evil.io/fleet/edge"}, ""},
		{[]string{"https://fleetlb.io/fleet/edge"}, ""},
		{[]string{"spiffe://fleetlb.io/tenant/edge"}, ""},
		{[]string{"spiffe://fleetlb.io/fleet/"}, ""},
		{[]string{"spiffe://fleetlb.io/fleet/a/b"}, ""},
		{[]string{"spiffe://fleetlb.io/fleet/edge?x=1"}, ""},
	} {
		cert := &x509.Certificate{}
		for _, u := range c.uris {
			p, err := url.Parse(u)
			if err != nil {
				t.Fatal(err)
			}
			cert.URIs = append(cert.URIs, p)
		}
		got, err := FleetOf(cert)
		if got != c.want || (err == nil) != (c.want != "") {
			t.Errorf("FleetOf(%v) = %q, %v; want %q", c.uris, got, err, c.want)
		}
	}
}

func TestIssueAndVerify(t *testing.T) {
	now := time.Now()
	ca, err := NewCA("test", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ParseCA(ca.CertPEM, ca.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	client, err := again.IssueFleetClient("edge", 2*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Verify(client.Cert, x509.ExtKeyUsageClientAuth, now); err != nil {
		t.Fatalf("client certificate: %v", err)
	}
	if err := ca.Verify(client.Cert, x509.ExtKeyUsageServerAuth, now); err == nil {
		t.Fatal("a client certificate serves")
	}
	if client.Cert.NotAfter.After(ca.Cert.NotAfter) {
		t.Fatal("a certificate outlives its CA")
	}
	if f, err := FleetOf(client.Cert); err != nil || f != "edge" {
		t.Fatalf("FleetOf = %q, %v", f, err)
	}
	srv, err := ca.IssueServer([]string{"xds.example", "127.0.0.1"}, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Cert.VerifyHostname("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if at := RenewAt(srv.Cert); !at.After(now) || !at.Before(srv.Cert.NotAfter) {
		t.Fatalf("RenewAt %v outside (%v, %v)", at, now, srv.Cert.NotAfter)
	}
	other, _ := NewCA("other", time.Hour, now)
	if _, err := ParseCA(ca.CertPEM, other.KeyPEM); err == nil {
		t.Fatal("a CA with another CA's key parsed")
	}
}
