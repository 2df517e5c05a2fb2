package fleet

import (
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// DefaultFleet creates the ProxyFleet "default" when no ProxyFleet exists.
// Add it to the manager as a runnable: it runs once, on the leader.
type DefaultFleet struct {
	// Client lists and creates ProxyFleets (the manager's client: leader
	// runnables start after the caches have synced).
	Client client.Client
	Log    logr.Logger
	// Exposure of the created fleet; empty leaves the API default (LoadBalancerService).
	Exposure v1.Exposure
}

// Start implements manager.Runnable.
func (d *DefaultFleet) Start(ctx context.Context) error {
	created, err := d.Ensure(ctx)
	if err != nil {
		return fmt.Errorf("creating the default ProxyFleet: %w", err)
	}
	if created {
		d.Log.Info("created the default ProxyFleet", "name", v1.DefaultFleetName, "exposure", d.Exposure)
	}
	return nil
}

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (d *DefaultFleet) NeedLeaderElection() bool { return true }

// Ensure creates the default fleet if there is no fleet at all, and reports whether it did.
func (d *DefaultFleet) Ensure(ctx context.Context) (bool, error) {
	var list v1.ProxyFleetList
	if err := d.Client.List(ctx, &list, client.Limit(1)); err != nil {
		return false, err
	}
	if len(list.Items) > 0 {
		return false, nil
	}
	f := &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: v1.DefaultFleetName}, Spec: v1.ProxyFleetSpec{Exposure: d.Exposure}}
	if err := d.Client.Create(ctx, f); apierrors.IsAlreadyExists(err) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	return true, nil
}

// Exists reports, from reader (the manager's cache), whether a ProxyFleet of
// that name exists and is not being deleted. The xDS server serves, and the
// report Leases and metric labels name, no other fleet.
func Exists(reader client.Reader) func(fleet string) bool {
	return func(name string) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var f v1.ProxyFleet
		return reader.Get(ctx, client.ObjectKey{Name: name}, &f) == nil && f.DeletionTimestamp.IsZero()
	}
}
