// Package dns publishes the accepted hostnames of Routes for external-dns:
// for every Route with accepted hostnames and an address, a DNSEndpoint
// (externaldns.k8s.io/v1alpha1) of the same name in the Route's namespace
// holds one A (or AAAA) record per hostname pointing at the fleet's VIP.
// It is removed when the Route goes away or no longer has an accepted
// hostname. When the DNSEndpoint CRD is not installed the controller is not
// started (Setup says so); install the CRD and restart the manager to enable it.
//
// DNSEndpoint is written as unstructured data: external-dns is not imported
// (its modules do not build here, see DESIGN §8).
package dns

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"slices"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// GVK of external-dns's DNSEndpoint.
var GVK = schema.GroupVersionKind{Group: "externaldns.k8s.io", Version: "v1alpha1", Kind: "DNSEndpoint"}

// LabelRoute marks a DNSEndpoint made for the Route of that name.
const LabelRoute = "fleetlb.io/route"

// DefaultTTL of the records, in seconds.
const DefaultTTL = 300

// Reconciler keeps one DNSEndpoint per Route.
type Reconciler struct {
	Client client.Client
	Log    logr.Logger
	// TTL of the records in seconds; DefaultTTL when 0.
	TTL int64
}

// Installed reports whether the API server serves DNSEndpoints.
func Installed(mgr ctrl.Manager) (bool, error) {
	_, err := mgr.GetRESTMapper().RESTMapping(GVK.GroupKind(), GVK.Version)
	if meta.IsNoMatchError(err) {
		return false, nil
	}
	return err == nil, err
}

// Setup registers the controller when the DNSEndpoint CRD is installed and
// reports whether it did.
func (r *Reconciler) Setup(mgr ctrl.Manager) (bool, error) {
	ok, err := Installed(mgr)
	if err != nil || !ok {
		if err == nil {
			r.Log.Info("DNSEndpoint CRD (externaldns.k8s.io/v1alpha1) not installed: no DNS records are published")
		}
		return false, err
	}
	de := &unstructured.Unstructured{}
	de.SetGroupVersionKind(GVK)
	return true, ctrl.NewControllerManagedBy(mgr).
		For(&v1.Route{}).
		Owns(de).
		Named("route-dns").
		Complete(r)
}

// endpoints are the records a Route should publish (nil: none).
func (r *Reconciler) endpoints(rt *v1.Route) []any {
	if !rt.DeletionTimestamp.IsZero() || !meta.IsStatusConditionTrue(rt.Status.Conditions, v1.ConditionAccepted) {
		return nil
	}
	var v4, v6 []any
	for _, a := range rt.Status.Addresses {
		ip, err := netip.ParseAddr(string(a.IP))
		switch {
		case err != nil:
		case ip.Is4():
			v4 = append(v4, ip.String())
		default:
			v6 = append(v6, ip.String())
		}
	}
	ttl := r.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	var out []any
	hosts := slices.Clone(rt.Status.AcceptedHostnames)
	slices.Sort(hosts)
	for _, h := range slices.Compact(hosts) {
		if !slices.Contains(rt.Spec.Hostnames, h) {
			continue
		}
		for _, rec := range []struct {
			typ     string
			targets []any
		}{{"A", v4}, {"AAAA", v6}} {
			if len(rec.targets) > 0 {
				out = append(out, map[string]any{"dnsName": string(h), "recordType": rec.typ, "recordTTL": ttl, "targets": rec.targets})
			}
		}
	}
	return out
}

// Reconcile implements reconcile.Reconciler.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	cur := &unstructured.Unstructured{}
	cur.SetGroupVersionKind(GVK)
	err := r.Client.Get(ctx, req.NamespacedName, cur)
	if err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	exists := err == nil
	if exists && cur.GetLabels()[LabelRoute] != req.Name {
		return ctrl.Result{}, nil // not ours: leave it alone
	}

	var rt v1.Route
	var eps []any
	if err := r.Client.Get(ctx, req.NamespacedName, &rt); err == nil {
		eps = r.endpoints(&rt)
	} else if !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	if len(eps) == 0 {
		if exists {
			r.Log.Info("removing DNS records", "route", req.NamespacedName)
			return ctrl.Result{}, client.IgnoreNotFound(r.Client.Delete(ctx, cur))
		}
		return ctrl.Result{}, nil
	}

	if exists {
		have, _, _ := unstructured.NestedSlice(cur.Object, "spec", "endpoints")
		if reflect.DeepEqual(normalize(have), normalize(eps)) {
			return ctrl.Result{}, nil
		}
		patch := client.MergeFrom(cur.DeepCopy())
		if err := unstructured.SetNestedSlice(cur.Object, eps, "spec", "endpoints"); err != nil {
			return ctrl.Result{}, err
		}
		r.Log.Info("updating DNS records", "route", req.NamespacedName)
		return ctrl.Result{}, r.Client.Patch(ctx, cur, patch)
	}
	de := &unstructured.Unstructured{}
	de.SetGroupVersionKind(GVK)
	de.SetNamespace(rt.Namespace)
	de.SetName(rt.Name)
	de.SetLabels(map[string]string{LabelRoute: rt.Name})
	de.SetOwnerReferences([]metav1.OwnerReference{{APIVersion: v1.GroupVersion.String(), Kind: "Route", Name: rt.Name, UID: rt.UID,
		Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}})
	if err := unstructured.SetNestedSlice(de.Object, eps, "spec", "endpoints"); err != nil {
		return ctrl.Result{}, err
	}
	r.Log.Info("publishing DNS records", "route", req.NamespacedName)
	err = r.Client.Create(ctx, de)
	if apierrors.IsAlreadyExists(err) {
		return ctrl.Result{}, errors.New("DNSEndpoint appeared meanwhile; retrying")
	}
	return ctrl.Result{}, err
}

// normalize makes JSON-decoded and freshly built endpoint lists comparable
// (numbers decode as int64, built ones are int64 too; lists as []any).
func normalize(eps []any) []map[string]any {
	out := make([]map[string]any, 0, len(eps))
	for _, e := range eps {
		m, ok := e.(map[string]any)
		if !ok {
			continue
		}
		n := map[string]any{}
		for _, k := range []string{"dnsName", "recordType", "targets"} {
			n[k] = m[k]
		}
		switch ttl := m["recordTTL"].(type) {
		case int64:
			n["recordTTL"] = ttl
		case float64:
			n["recordTTL"] = int64(ttl)
		case int:
			n["recordTTL"] = int64(ttl)
		}
		out = append(out, n)
	}
	return out
}
