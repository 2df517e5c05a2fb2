package dns

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/testenv"
	"github.com/fleetlb/fleetlb/manager/route"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

func TestDNSEndpointFollowsAcceptedHostnames(t *testing.T) {
	env := testenv.Start(t, testenv.Options{ExtraCRDDirs: []string{filepath.Join("testdata", "crds")}})
	ctx := context.Background()
	mgr := env.NewManager(t)
	if err := (&route.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("route")}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ok, err := (&Reconciler{Client: mgr.GetClient(), Log: testr.New(t), TTL: 60}).Setup(mgr)
	if err != nil || !ok {
		t.Fatalf("Setup = %v, %v; want the controller started", ok, err)
	}
	testenv.Run(t, mgr)

	if err := env.Client.Create(ctx, &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: v1.ProxyFleetSpec{VIP: "127.0.70.1", Exposure: v1.ExposureNone}}); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "a"},
		Spec: v1.TenantSpec{AddressPool: "p", Hostnames: []v1.Hostname{"*.a.example.com"}}}); err != nil {
		t.Fatal(err)
	}
	ns := tenant.Namespace("a")
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	rt := &v1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ingress.default.web"}, Spec: v1.RouteSpec{
		Source:    v1.RouteSource{Kind: v1.SourceIngress, Cluster: "a", Namespace: "default", Name: "web", UID: "u"},
		Hostnames: []v1.Hostname{"www.a.example.com", "not-mine.example.org"},
		Rules:     []v1.RouteRule{{Backends: []v1.RouteBackend{{ServiceName: "web", NodePort: 30080}}}},
	}}
	if err := env.Client.Create(ctx, rt); err != nil {
		t.Fatal(err)
	}

	record := func(h string) map[string]any {
		return map[string]any{"dnsName": h, "recordType": "A", "recordTTL": int64(60), "targets": []any{"127.0.70.1"}}
	}
	want := func(what string, eps ...map[string]any) {
		t.Helper()
		testenv.Eventually(t, what, func() error {
			de := &unstructured.Unstructured{}
			de.SetGroupVersionKind(GVK)
			err := env.Client.Get(ctx, client.ObjectKeyFromObject(rt), de)
			if len(eps) == 0 {
				if apierrors.IsNotFound(err) {
					return nil
				}
				return fmt.Errorf("still there (%v)", err)
			}
			if err != nil {
				return err
			}
			have, _, _ := unstructured.NestedSlice(de.Object, "spec", "endpoints")
			wantAny := make([]any, len(eps))
			for i := range eps {
				wantAny[i] = eps[i]
			}
			if !reflect.DeepEqual(have, wantAny) {
				return fmt.Errorf("endpoints %v, want %v", have, wantAny)
			}
			if refs := de.GetOwnerReferences(); len(refs) != 1 || refs[0].Kind != "Route" || refs[0].Name != rt.Name {
				return fmt.Errorf("owner references %v", refs)
			}
			return nil
		})
	}
	// Only the accepted hostname is published.
	want("record for www", record("www.a.example.com"))

	// A second accepted hostname joins the same DNSEndpoint.
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(rt), rt); err != nil {
		t.Fatal(err)
	}
	rt.Spec.Hostnames = append(rt.Spec.Hostnames, "api.a.example.com")
	if err := env.Client.Update(ctx, rt); err != nil {
		t.Fatal(err)
	}
	want("records for api and www", record("api.a.example.com"), record("www.a.example.com"))

	// The tenant loses the right to the names: the records go.
	var ten v1.Tenant
	if err := env.Client.Get(ctx, client.ObjectKey{Name: "a"}, &ten); err != nil {
		t.Fatal(err)
	}
	// A patch: the manager writes the Tenant's status (hostname claims) meanwhile.
	before := ten.DeepCopy()
	ten.Spec.Hostnames = []v1.Hostname{"*.b.example.com"}
	if err := env.Client.Patch(ctx, &ten, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
	want("no records once no hostname is accepted")
	before = ten.DeepCopy()
	ten.Spec.Hostnames = []v1.Hostname{"*.a.example.com"}
	if err := env.Client.Patch(ctx, &ten, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
	want("records again", record("api.a.example.com"), record("www.a.example.com"))

	// The Route is deleted: so is the DNSEndpoint (no garbage collector runs here).
	if err := env.Client.Delete(ctx, rt); err != nil {
		t.Fatal(err)
	}
	want("no records after delete")
}

func TestSkippedWithoutCRD(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	mgr := env.NewManager(t)
	ok, err := (&Reconciler{Client: mgr.GetClient(), Log: testr.New(t)}).Setup(mgr)
	if err != nil || ok {
		t.Fatalf("Setup = %v, %v; want skipped without error", ok, err)
	}
	testenv.Run(t, mgr) // the manager runs without the controller
}
