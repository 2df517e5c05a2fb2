package main

import (
	"cmp"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/envoy/server"
	"github.com/fleetlb/fleetlb/manager/fleet"
	"github.com/fleetlb/fleetlb/manager/pool"
)

// fleetOptions are the flags of the ProxyFleet and AddressPool controllers.
type fleetOptions struct {
	namespace, xdsAddress, defaultExposure string
	delta, createDefault                   bool
}

func (o *fleetOptions) bind(fs *flag.FlagSet) {
	fs.StringVar(&o.namespace, "fleet-namespace", "", "Namespace of every ProxyFleet's Envoy Deployment, Service, ConfigMap and ServiceAccount (default: $POD_NAMESPACE, the in-cluster namespace, else fleetlb-system).")
	fs.StringVar(&o.xdsAddress, "fleet-xds-address", "", "host:port Envoy pods use to reach this manager's xDS server, written into their bootstrap (default: fleetlb-manager.<fleet-namespace>.svc and the port of --xds-address).")
	fs.BoolVar(&o.delta, "fleet-xds-delta", true, "Envoy pods use incremental (delta) xDS; false selects state of the world.")
	fs.BoolVar(&o.createDefault, "create-default-fleet", true, "Create the ProxyFleet \"default\" at start when no ProxyFleet exists.")
	fs.StringVar(&o.defaultExposure, "default-fleet-exposure", "", "Exposure of the created default fleet: LoadBalancerService, HostNetwork or None (default: the API default, LoadBalancerService).")
}

// fleetNamespace is --fleet-namespace, else $POD_NAMESPACE, else the
// in-cluster namespace, else fleetlb-system.
func (o *fleetOptions) fleetNamespace() string {
	ns := o.namespace
	if ns == "" {
		ns = os.Getenv("POD_NAMESPACE")
	}
	if ns == "" {
		if b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err == nil {
			ns = strings.TrimSpace(string(b))
		}
	}
	return cmp.Or(ns, "fleetlb-system")
}

// cacheOptions are the manager's cache: what cacheByObject limits, and no
// object's managedFields. Nothing in the manager reads them (server-side apply
// and updates do not need them: the API server keeps its own), and they are
// most of an object's size: a Tenant's hostname claims, or the Programmed
// condition applied to every LoadBalancer and Route, is listed there again
// per field manager, in the cache and in every copy read from it.
func (o *fleetOptions) cacheOptions() cache.Options {
	return cache.Options{ByObject: o.cacheByObject(), DefaultTransform: cache.TransformStripManagedFields()}
}

// cacheByObject limits the cache of what only the fleet controller reads
// (Envoy Deployments, Services, ConfigMaps; the xDS report Leases) to the fleet namespace: the
// manager must not hold every ConfigMap of the management cluster in memory.
// Secrets: every Secret of the fleet namespace (the manager's own), elsewhere
// only kubernetes.io/tls ones: a tenant cannot make the manager hold other
// Secrets (or much of anything) it writes into its namespace. Whatever reads
// another type of Secret outside the fleet namespace (the ccm kubeconfig) reads
// it uncached (uncachedSecrets).
func (o *fleetOptions) cacheByObject() map[client.Object]cache.ByObject {
	only := cache.ByObject{Namespaces: map[string]cache.Config{o.fleetNamespace(): {}}}
	secrets := cache.ByObject{Namespaces: map[string]cache.Config{
		o.fleetNamespace():  {},
		cache.AllNamespaces: {FieldSelector: fields.OneTermEqualSelector("type", string(corev1.SecretTypeTLS))},
	}}
	return map[client.Object]cache.ByObject{&appsv1.Deployment{}: only, &corev1.Service{}: only, &corev1.ConfigMap{}: only,
		&coordinationv1.Lease{}: only, &corev1.Secret{}: secrets}
}

// uncachedSecrets is a client like the manager's that reads Secrets from the
// API server, for what reads Secrets the cache does not hold.
func uncachedSecrets(mgr ctrl.Manager) (client.Client, error) {
	return client.New(mgr.GetConfig(), client.Options{Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper(),
		Cache: &client.CacheOptions{Reader: mgr.GetCache(), DisableFor: []client.Object{&corev1.Secret{}}}})
}

// xdsAddressFor is --fleet-xds-address, else the manager's Service and the port of xdsListen.
func (o *fleetOptions) xdsAddressFor(xdsListen string) (string, error) {
	if o.xdsAddress != "" {
		if _, _, err := net.SplitHostPort(o.xdsAddress); err != nil {
			return "", fmt.Errorf("--fleet-xds-address %q: %w", o.xdsAddress, err)
		}
		return o.xdsAddress, nil
	}
	_, port, err := net.SplitHostPort(xdsListen)
	if err != nil {
		return "", fmt.Errorf("--xds-address %q: %w", xdsListen, err)
	}
	return net.JoinHostPort("fleetlb-manager."+o.fleetNamespace()+".svc", port), nil
}

// setup registers the fleet and pool controllers (and the default fleet) with
// mgr; addr is where the fleets' proxies reach xDS, certs (nil: plaintext
// xDS) issues their client certificates.
func (o *fleetOptions) setup(mgr ctrl.Manager, xds *server.Server, addr string, certs fleet.ClientCertificates) error {
	ns := o.fleetNamespace()
	switch e := v1.Exposure(o.defaultExposure); e {
	case "", v1.ExposureLoadBalancerService, v1.ExposureHostNetwork, v1.ExposureNone:
	default:
		return fmt.Errorf("--default-fleet-exposure %q: want LoadBalancerService, HostNetwork or None", e)
	}
	if err := (&fleet.Reconciler{
		Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("fleetlb-fleet"), XDS: xds, Certificates: certs,
		Options: fleet.Options{Namespace: ns, XDSAddress: addr, Delta: o.delta},
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&pool.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("fleetlb-pool")}).SetupWithManager(mgr); err != nil {
		return err
	}
	if o.createDefault {
		return mgr.Add(&fleet.DefaultFleet{Client: mgr.GetClient(), Log: ctrl.Log.WithName("fleet"), Exposure: v1.Exposure(o.defaultExposure)})
	}
	return nil
}
