package fleet

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/envoy/bootstrap"
	"github.com/fleetlb/fleetlb/internal/pki"
	"github.com/fleetlb/fleetlb/internal/testenv"
	"github.com/fleetlb/fleetlb/manager/xdscerts"
)

// startWithCA runs the controller with a real xdscerts.Authority whose CA
// lives in the fleets' namespace; clientLifetime bounds the client certificates.
func startWithCA(t *testing.T, clientLifetime time.Duration) (*xdscerts.Authority, string) {
	t.Helper()
	ctx := context.Background()
	ns := uniq("fleets")
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	auth := &xdscerts.Authority{Reader: env.Client, Writer: env.Client, Namespace: ns, ServingHosts: []string{"127.0.0.1"},
		Log: testr.New(t), ClientLifetime: clientLifetime}
	if _, err := auth.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	mgr := env.NewManager(t)
	if err := (&Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("fleet"), XDS: newStub(), Certificates: auth,
		Options: Options{Namespace: ns, XDSAddress: xdsAddr}}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, mgr)
	return auth, ns
}

// clientCert checks a fleet's client Secret and returns its certificate.
func clientCert(s *corev1.Secret, fleet string, ca []byte) (*x509.Certificate, error) {
	if s.Type != corev1.SecretTypeTLS {
		return nil, fmt.Errorf("type %s", s.Type)
	}
	if ca != nil && !bytes.Equal(s.Data["ca.crt"], ca) {
		return nil, fmt.Errorf("ca.crt is not the CA")
	}
	if _, err := tls.X509KeyPair(s.Data["tls.crt"], s.Data["tls.key"]); err != nil {
		return nil, err
	}
	c, err := pki.ParseCertificate(s.Data["tls.crt"])
	if err != nil {
		return nil, err
	}
	if name, err := pki.FleetOf(c); err != nil || name != fleet {
		return nil, fmt.Errorf("certificate names fleet %q (%v), want %q", name, err, fleet)
	}
	return c, nil
}

func caPEM(t *testing.T, ns string) []byte {
	t.Helper()
	var s corev1.Secret
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: xdscerts.CASecretName}, &s); err != nil {
		t.Fatal(err)
	}
	return s.Data["tls.crt"]
}

// TestFleetClientCertificate: every fleet gets a Secret with a client
// certificate naming it, from the CA in the namespace; the Deployment mounts
// it and the bootstrap reads it over file-based SDS.
func TestFleetClientCertificate(t *testing.T) {
	_, ns := startWithCA(t, 0)
	f := createFleet(t, &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: uniq("secure")}})
	name := xdscerts.ClientSecretName(f.Name)
	ca := caPEM(t, ns)
	var sec corev1.Secret
	testenv.Eventually(t, "client Secret", func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &sec); err != nil {
			return err
		}
		_, err := clientCert(&sec, f.Name, ca)
		return err
	})
	if ref := metav1.GetControllerOf(&sec); ref == nil || ref.UID != f.UID {
		t.Errorf("client Secret not controlled by the fleet: %+v", ref)
	}
	cm := get(t, ns, ObjectName(f.Name), &corev1.ConfigMap{})
	for _, k := range []string{BootstrapKey, bootstrap.ClientCertificateFile, bootstrap.ValidationContextFile} {
		if cm.Data[k] == "" {
			t.Errorf("ConfigMap lacks %s", k)
		}
	}
	dep := get(t, ns, ObjectName(f.Name), &appsv1.Deployment{})
	mounted := false
	for _, v := range dep.Spec.Template.Spec.Volumes {
		if v.Secret != nil && v.Secret.SecretName == name {
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("the Deployment does not mount %s: %+v", name, dep.Spec.Template.Spec.Volumes)
	}

	// A reconcile for another reason keeps the valid certificate: no churn.
	// A merge patch of the spec: the controller writes the fleet's status meanwhile.
	live := f.DeepCopy()
	if err := env.Client.Patch(context.Background(), live, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"replicas":5}}`))); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "deployment scaled", func() error {
		var d appsv1.Deployment
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: ObjectName(f.Name)}, &d); err != nil {
			return err
		}
		if *d.Spec.Replicas != 5 {
			return fmt.Errorf("replicas %d", *d.Spec.Replicas)
		}
		return nil
	})
	var after corev1.Secret
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &after); err != nil {
		t.Fatal(err)
	}
	if after.ResourceVersion != sec.ResourceVersion {
		t.Errorf("a valid client Secret was rewritten (resourceVersion %s → %s)", sec.ResourceVersion, after.ResourceVersion)
	}
}

// TestFleetClientCertificateDriftAndRotation: a tampered Secret is replaced,
// a certificate due for renewal is renewed, and a new CA reissues it.
func TestFleetClientCertificateDriftAndRotation(t *testing.T) {
	ctx := context.Background()
	auth, ns := startWithCA(t, 6*time.Second)
	f := createFleet(t, &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: uniq("rot")}, Spec: v1.ProxyFleetSpec{Exposure: v1.ExposureNone}})
	key := client.ObjectKey{Namespace: ns, Name: xdscerts.ClientSecretName(f.Name)}
	ca := caPEM(t, ns)
	// waitNew waits for a valid certificate other than prev, from ca.
	waitNew := func(what string, prev *x509.Certificate, ca []byte) *x509.Certificate {
		t.Helper()
		var got *x509.Certificate
		testenv.Eventually(t, what, func() error {
			var s corev1.Secret
			if err := env.Client.Get(ctx, key, &s); err != nil {
				return err
			}
			c, err := clientCert(&s, f.Name, ca)
			if err != nil {
				return err
			}
			if prev != nil && c.SerialNumber.Cmp(prev.SerialNumber) == 0 {
				return fmt.Errorf("still serial %v", prev.SerialNumber)
			}
			got = c
			return nil
		})
		return got
	}
	first := waitNew("first certificate", nil, ca)

	// Drift: someone writes another key into the Secret.
	var s corev1.Secret
	if err := env.Client.Get(ctx, key, &s); err != nil {
		t.Fatal(err)
	}
	s.Data["tls.crt"] = []byte("not a certificate")
	if err := env.Client.Update(ctx, &s); err != nil {
		t.Fatal(err)
	}
	repaired := waitNew("repaired certificate", first, ca)

	// Renewal: the 6 s certificate is renewed after two thirds of its life.
	renewed := waitNew("renewed certificate", repaired, ca)
	if !renewed.NotBefore.After(repaired.NotBefore) {
		t.Errorf("renewed certificate starts %v, not after %v", renewed.NotBefore, repaired.NotBefore)
	}

	// CA rotation: the CA Secret is deleted; the next sync makes a new CA and
	// the fleet's certificate is reissued from it.
	if err := env.Client.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: xdscerts.CASecretName}}); err != nil {
		t.Fatal(err)
	}
	if _, err := auth.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	newCA := caPEM(t, ns)
	if bytes.Equal(newCA, ca) {
		t.Fatal("the CA was not replaced")
	}
	waitNew("certificate from the new CA", nil, newCA)
}
