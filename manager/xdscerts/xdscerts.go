// Package xdscerts keeps the certificates of authenticated xDS: the CA in a
// Secret of the fleet namespace (created once by the leader, read by every
// replica), each replica's serving certificate (in memory only, renewed at two
// thirds of its life) and the data of every fleet's client-certificate Secret
// (written by manager/fleet).
//
// Rotating the CA: delete the Secret CASecretName. The leader creates a new
// CA, every replica picks it up within CARecheck and issues itself a new
// serving certificate, and the fleet controller reissues every fleet's client
// Secret; proxies keep serving their last configuration and reconnect with
// the new certificate once Kubernetes has updated the mounted Secret.
package xdscerts

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fleetlb/fleetlb/internal/pki"
)

const (
	// CASecretName holds the CA (tls.crt, tls.key) in the fleet namespace.
	CASecretName = "fleetlb-xds-ca"
	// CAKey is the CA certificate's key in every fleet's client Secret.
	CAKey = "ca.crt"
	// CARecheck is how often a replica re-reads the CA Secret (a rotated CA
	// reaches every replica within it).
	CARecheck = time.Minute
	// caWait is how often a replica that does not lead looks for a CA not yet created.
	caWait = 2 * time.Second
)

// ClientSecretName is the Secret holding a fleet's client certificate.
func ClientSecretName(fleet string) string { return "fleetlb-proxy-" + fleet + "-xds-tls" }

// ErrNotReady is returned until the CA has been loaded.
var ErrNotReady = errors.New("the xDS CA is not loaded yet")

// Authority is the manager's xDS CA and serving certificate. Add it to the
// manager as a Runnable: it runs on every replica.
type Authority struct {
	// Reader reads the CA Secret uncached (the manager's API reader); Writer creates it.
	Reader    client.Reader
	Writer    client.Client
	Namespace string
	// ServingHosts are the serving certificate's DNS names and IP addresses.
	ServingHosts []string
	// Elected is closed when this replica leads (manager.Elected()); only
	// the leader creates a missing CA.
	Elected <-chan struct{}
	Log     logr.Logger
	// Lifetimes; zero takes pki's defaults.
	ServingLifetime, ClientLifetime time.Duration
	// Now is the clock (tests).
	Now func() time.Time

	mu       sync.RWMutex
	ca       *pki.CA
	serving  *tls.Certificate
	renewAt  time.Time
	onChange []func()
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: every replica serves xDS.
func (a *Authority) NeedLeaderElection() bool { return false }

func (a *Authority) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// OnCAChanged registers f, called when a CA is loaded or replaced.
func (a *Authority) OnCAChanged(f func()) {
	a.mu.Lock()
	a.onChange = append(a.onChange, f)
	a.mu.Unlock()
}

// Current is the serving certificate and the pool client certificates must
// chain to (for xdstransport.ServerTLS).
func (a *Authority) Current() (*tls.Certificate, *x509.CertPool, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.ca == nil || a.serving == nil {
		return nil, nil, ErrNotReady
	}
	return a.serving, a.ca.Pool(), nil
}

// Ready reports whether the CA is loaded.
func (a *Authority) Ready() bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.ca != nil
}

// Start loads (or, on the leader, creates) the CA, issues the serving
// certificate, and keeps both current until ctx ends.
func (a *Authority) Start(ctx context.Context) error {
	retry := time.Second
	for {
		next, err := a.Sync(ctx)
		if err != nil {
			a.Log.Error(err, "xDS certificates", "retryIn", retry)
			next, retry = retry, min(retry*2, CARecheck)
		} else {
			retry = time.Second
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-a.Elected:
			a.Elected = nil // a nil channel never fires again
			t.Stop()
		case <-t.C:
		}
	}
}

// Sync brings the CA and the serving certificate up to date once and says
// when to look again.
func (a *Authority) Sync(ctx context.Context) (time.Duration, error) {
	ca, err := a.loadCA(ctx)
	if err != nil {
		return 0, err
	}
	if ca == nil {
		// The leader has not created it yet (a fresh install): look again soon.
		return caWait, nil
	}
	now := a.now()
	a.mu.Lock()
	changed := a.ca == nil || !bytes.Equal(a.ca.CertPEM, ca.CertPEM)
	if changed {
		a.ca, a.serving = ca, nil
	}
	renew := a.serving == nil || !now.Before(a.renewAt)
	a.mu.Unlock()
	if renew {
		kp, err := ca.IssueServer(a.ServingHosts, cmpDur(a.ServingLifetime, pki.ServingLifetime), now)
		if err != nil {
			return 0, fmt.Errorf("issuing the xDS serving certificate: %w", err)
		}
		c, err := kp.TLS()
		if err != nil {
			return 0, err
		}
		a.mu.Lock()
		a.serving, a.renewAt = c, pki.RenewAt(kp.Cert)
		a.mu.Unlock()
		a.Log.Info("xDS serving certificate issued", "hosts", a.ServingHosts, "notAfter", kp.Cert.NotAfter, "renewAt", a.renewAt)
	}
	if changed {
		a.Log.Info("xDS CA loaded", "subject", ca.Cert.Subject.String(), "notAfter", ca.Cert.NotAfter)
		a.mu.RLock()
		subs := slices.Clone(a.onChange)
		a.mu.RUnlock()
		for _, f := range subs {
			f()
		}
	}
	a.mu.RLock()
	wait := a.renewAt.Sub(now)
	a.mu.RUnlock()
	return max(min(wait, CARecheck), time.Second), nil
}

func (a *Authority) elected() bool {
	if a.Elected == nil {
		return true // Start saw it closed
	}
	select {
	case <-a.Elected:
		return true
	default:
		return false
	}
}

// loadCA reads the CA Secret; the leader creates it when it is missing. It
// returns nil without an error while a non-leader waits for it.
func (a *Authority) loadCA(ctx context.Context) (*pki.CA, error) {
	key := client.ObjectKey{Namespace: a.Namespace, Name: CASecretName}
	var s corev1.Secret
	err := a.Reader.Get(ctx, key, &s)
	if apierrors.IsNotFound(err) {
		if !a.elected() {
			return nil, nil
		}
		ca, err := pki.NewCA("fleetlb xDS CA", pki.CALifetime, a.now())
		if err != nil {
			return nil, err
		}
		s = corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: a.Namespace, Name: CASecretName,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "fleetlb-manager"}},
			Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{corev1.TLSCertKey: ca.CertPEM, corev1.TLSPrivateKeyKey: ca.KeyPEM},
		}
		if err := a.Writer.Create(ctx, &s); apierrors.IsAlreadyExists(err) {
			return a.loadCA(ctx) // another replica was first
		} else if err != nil {
			return nil, fmt.Errorf("creating the xDS CA Secret %s: %w", key, err)
		}
		a.Log.Info("created the xDS CA", "secret", key.String())
		return ca, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the xDS CA Secret %s: %w", key, err)
	}
	ca, err := pki.ParseCA(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		// Never overwritten: an operator may have put their own CA there.
		return nil, fmt.Errorf("the xDS CA Secret %s is unusable (delete it to have a new CA made): %w", key, err)
	}
	return ca, nil
}

// ClientSecretData is the data of a fleet's client Secret (tls.crt,
// tls.key, ca.crt): have itself while it holds a certificate for fleet from
// the current CA that is not yet due for renewal, else a new one; and when it
// is due.
func (a *Authority) ClientSecretData(fleet string, have map[string][]byte) (map[string][]byte, time.Time, error) {
	a.mu.RLock()
	ca := a.ca
	a.mu.RUnlock()
	if ca == nil {
		return nil, time.Time{}, ErrNotReady
	}
	now := a.now()
	if at, ok := stillGood(ca, fleet, have, now); ok {
		return have, at, nil
	}
	kp, err := ca.IssueFleetClient(fleet, cmpDur(a.ClientLifetime, pki.ClientLifetime), now)
	if err != nil {
		return nil, time.Time{}, err
	}
	return map[string][]byte{corev1.TLSCertKey: kp.CertPEM, corev1.TLSPrivateKeyKey: kp.KeyPEM, CAKey: ca.CertPEM}, pki.RenewAt(kp.Cert), nil
}

// stillGood reports whether have is a usable client certificate for fleet
// from ca, and when it must be renewed.
func stillGood(ca *pki.CA, fleet string, have map[string][]byte, now time.Time) (time.Time, bool) {
	if !bytes.Equal(have[CAKey], ca.CertPEM) {
		return time.Time{}, false
	}
	c, err := pki.ParseCertificate(have[corev1.TLSCertKey])
	if err != nil {
		return time.Time{}, false
	}
	if name, err := pki.FleetOf(c); err != nil || name != fleet {
		return time.Time{}, false
	}
	if err := ca.Verify(c, x509.ExtKeyUsageClientAuth, now); err != nil {
		return time.Time{}, false
	}
	if _, err := tls.X509KeyPair(have[corev1.TLSCertKey], have[corev1.TLSPrivateKeyKey]); err != nil {
		return time.Time{}, false
	}
	at := pki.RenewAt(c)
	return at, now.Before(at)
}

func cmpDur(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
