package xdscerts

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/fleetlb/fleetlb/internal/pki"
)

func authority(t *testing.T, c client.Client, elected chan struct{}) *Authority {
	return &Authority{Reader: c, Writer: c, Namespace: "fleetlb-system", ServingHosts: []string{"fleetlb-manager.fleetlb-system.svc", "127.0.0.1"},
		Elected: elected, Log: testr.New(t)}
}

// TestOnlyTheLeaderCreatesTheCA: a replica that does not lead waits for the
// CA; the leader creates it; both then serve with certificates from the one CA.
func TestOnlyTheLeaderCreatesTheCA(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientBuilder().Build()
	follower := authority(t, c, make(chan struct{}))
	if _, err := follower.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := follower.Current(); !errors.Is(err, ErrNotReady) {
		t.Fatalf("a follower without a CA serves: %v", err)
	}
	var s corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: "fleetlb-system", Name: CASecretName}, &s); err == nil {
		t.Fatal("a follower created the CA")
	}

	led := make(chan struct{})
	close(led)
	leader := authority(t, c, led)
	changed := 0
	leader.OnCAChanged(func() { changed++ })
	if _, err := leader.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if changed != 1 {
		t.Fatalf("OnCAChanged called %d times, want 1", changed)
	}
	if _, err := follower.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for name, a := range map[string]*Authority{"leader": leader, "follower": follower} {
		cert, pool, err := a.Current()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "fleetlb-manager.fleetlb-system.svc"}); err != nil {
			t.Errorf("%s serving certificate: %v", name, err)
		}
		if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "127.0.0.1"}); err != nil {
			t.Errorf("%s serving certificate for 127.0.0.1: %v", name, err)
		}
	}
	// A restarted leader reuses the CA.
	again := authority(t, c, led)
	if _, err := again.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.ca.CertPEM, leader.ca.CertPEM) {
		t.Fatal("a restarted replica made a new CA")
	}
}

// TestClientSecretData: a valid certificate is kept; one for another fleet,
// from another CA, or due for renewal is replaced.
func TestClientSecretData(t *testing.T) {
	ctx := context.Background()
	led := make(chan struct{})
	close(led)
	a := authority(t, fake.NewClientBuilder().Build(), led)
	if _, _, err := a.ClientSecretData("edge", nil); !errors.Is(err, ErrNotReady) {
		t.Fatalf("before the CA: %v", err)
	}
	if _, err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	data, renewAt, err := a.ClientSecretData("edge", nil)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := pki.ParseCertificate(data[corev1.TLSCertKey])
	if f, err := pki.FleetOf(c); err != nil || f != "edge" || !renewAt.Equal(pki.RenewAt(c)) {
		t.Fatalf("issued for %q (%v), renew %v", f, err, renewAt)
	}
	kept, _, _ := a.ClientSecretData("edge", data)
	if !bytes.Equal(kept[corev1.TLSCertKey], data[corev1.TLSCertKey]) {
		t.Error("a valid certificate was replaced")
	}
	if other, _, _ := a.ClientSecretData("core", data); bytes.Equal(other[corev1.TLSCertKey], data[corev1.TLSCertKey]) {
		t.Error("fleet core was given edge's certificate")
	}
	foreign, _ := pki.NewCA("other", time.Hour, time.Now())
	kp, _ := foreign.IssueFleetClient("edge", time.Hour, time.Now())
	forged := map[string][]byte{corev1.TLSCertKey: kp.CertPEM, corev1.TLSPrivateKeyKey: kp.KeyPEM, CAKey: data[CAKey]}
	if got, _, _ := a.ClientSecretData("edge", forged); bytes.Equal(got[corev1.TLSCertKey], kp.CertPEM) {
		t.Error("a certificate of another CA was kept")
	}
	a.Now = func() time.Time { return renewAt.Add(time.Second) }
	if got, _, _ := a.ClientSecretData("edge", data); bytes.Equal(got[corev1.TLSCertKey], data[corev1.TLSCertKey]) {
		t.Error("a certificate past two thirds of its life was kept")
	}
}
