package main

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/fleetlb/fleetlb/internal/testenv"
)

// The manager's cache holds the fleet namespace's Secrets and only
// kubernetes.io/tls Secrets elsewhere; the uncached client reads the others.
// Cached objects have no managedFields.
func TestSecretCache(t *testing.T) {
	env, err := testenv.New(testenv.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = env.Stop() }()
	ctx := context.Background()
	o := &fleetOptions{namespace: "fleet-sys"}
	for _, ns := range []string{"fleet-sys", "tenant-a"} {
		if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	secrets := []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "fleet-sys", Name: "ca"}, Type: corev1.SecretTypeOpaque},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: "web-tls"}, Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{corev1.TLSCertKey: []byte("c"), corev1.TLSPrivateKeyKey: []byte("k")}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: "big-opaque"}, Type: corev1.SecretTypeOpaque},
	}
	for _, s := range secrets {
		if err := env.Client.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"},
		Cache: o.cacheOptions()})
	if err != nil {
		t.Fatal(err)
	}
	uncached, err := uncachedSecrets(mgr)
	if err != nil {
		t.Fatal(err)
	}
	stop := testenv.Run(t, mgr)
	defer stop()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}
	var list corev1.SecretList
	if err := mgr.GetClient().List(ctx, &list); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, s := range list.Items {
		got[s.Namespace+"/"+s.Name] = true
	}
	if !got["fleet-sys/ca"] || !got["tenant-a/web-tls"] || got["tenant-a/big-opaque"] {
		t.Fatalf("cached Secrets %v: want fleet-sys/ca and tenant-a/web-tls, not tenant-a/big-opaque", got)
	}
	if err := mgr.GetClient().Get(ctx, client.ObjectKey{Namespace: "tenant-a", Name: "big-opaque"}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Fatalf("cached Get of an opaque tenant Secret: %v, want NotFound", err)
	}
	if err := uncached.Get(ctx, client.ObjectKey{Namespace: "tenant-a", Name: "big-opaque"}, &corev1.Secret{}); err != nil {
		t.Fatalf("uncached Get: %v", err)
	}

	// The API server keeps managedFields; the cache does not (in a namespace
	// of its own for Secrets, and for any other object).
	tlsKey := client.ObjectKey{Namespace: "tenant-a", Name: "web-tls"}
	fromServer := &corev1.Secret{}
	if err := uncached.Get(ctx, tlsKey, fromServer); err != nil {
		t.Fatal(err)
	}
	if len(fromServer.ManagedFields) == 0 {
		t.Fatal("the API server returned no managedFields: nothing to strip")
	}
	cached := &corev1.Secret{}
	if err := mgr.GetClient().Get(ctx, tlsKey, cached); err != nil {
		t.Fatal(err)
	}
	if len(cached.ManagedFields) != 0 || string(cached.Data[corev1.TLSCertKey]) != "c" {
		t.Fatalf("cached Secret: managedFields %v, data %v; want none and the data", cached.ManagedFields, cached.Data)
	}
	ns := &corev1.Namespace{}
	if err := mgr.GetClient().Get(ctx, client.ObjectKey{Name: "tenant-a"}, ns); err != nil {
		t.Fatal(err)
	}
	if len(ns.ManagedFields) != 0 {
		t.Fatalf("cached Namespace has managedFields %v", ns.ManagedFields)
	}
}
