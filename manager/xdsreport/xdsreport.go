// Package xdsreport lets the leader see what the proxies connected to the
// other manager replicas acknowledged.
//
// Every replica serves xDS, and a proxy connects to any of them; only the
// leader writes Programmed. So each replica keeps one Lease in the fleet
// namespace (label Label) whose annotations say, per fleet, how many proxies
// it serves and the content version of the snapshot all of them
// acknowledged. Snapshot versions are content hashes, so replicas that
// built the same configuration report the same version. The Lease is renewed
// while the replica lives; a replica that died stops counting once its Lease
// is older than its duration.
package xdsreport

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const (
	// Label marks the report Leases.
	Label = "fleetlb.io/xds-report"
	// annotationPrefix + fleet name → "<proxies> <acked version>".
	annotationPrefix = "xds.fleetlb.io/"
	// DefaultRenew is how often a replica renews its report.
	DefaultRenew = 15 * time.Second
)

// XDS is what a replica's xDS server tells about a fleet.
type XDS interface {
	Version(fleet string) (string, uint64)
	AckedGeneration(fleet string) uint64
	ConnectedProxies(fleet string) int
	OnAcked(func(fleet string, generation uint64))
	OnProxiesChanged(func(fleet string))
}

// LeaseName is the report Lease of a replica.
func LeaseName(replica string) string { return "fleetlb-xds-" + replica }

// Reporter keeps this replica's report Lease. It is a manager Runnable that
// runs on every replica, leader or not.
type Reporter struct {
	Client    client.Client
	Namespace string
	Replica   string
	XDS       XDS
	// Renew is the renewal period (DefaultRenew when 0); the Lease lasts three.
	Renew time.Duration
	Log   logr.Logger
	// FleetExists reports whether a ProxyFleet exists: the report names no
	// other fleet (a deleted one drops out at the next write). nil: every fleet.
	FleetExists func(fleet string) bool

	mu     sync.Mutex
	fleets map[string]bool
	kick   chan struct{}
}

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (r *Reporter) NeedLeaderElection() bool { return false }

// Register subscribes to the xDS server; call it before the server runs.
func (r *Reporter) Register() {
	r.fleets, r.kick = map[string]bool{}, make(chan struct{}, 1)
	note := func(fleet string) {
		r.mu.Lock()
		r.fleets[fleet] = true
		r.mu.Unlock()
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
	r.XDS.OnAcked(func(fleet string, _ uint64) { note(fleet) })
	r.XDS.OnProxiesChanged(note)
}

func (r *Reporter) renew() time.Duration {
	if r.Renew > 0 {
		return r.Renew
	}
	return DefaultRenew
}

// annotations is the report as it stands.
func (r *Reporter) annotations() map[string]string {
	r.mu.Lock()
	fleets := maps.Clone(r.fleets)
	r.mu.Unlock()
	out := map[string]string{}
	for f := range fleets {
		if r.FleetExists != nil && !r.FleetExists(f) {
			r.mu.Lock()
			delete(r.fleets, f) // noted again if it comes back
			r.mu.Unlock()
			continue
		}
		proxies := r.XDS.ConnectedProxies(f)
		version, gen := r.XDS.Version(f)
		if gen == 0 || r.XDS.AckedGeneration(f) < gen {
			version = "-" // not every proxy runs the current snapshot
		}
		out[annotationPrefix+f] = fmt.Sprintf("%d %s", proxies, version)
	}
	return out
}

// Start writes the report on every change and renews it; on shutdown it
// deletes it, so the leader stops waiting for this replica at once.
func (r *Reporter) Start(ctx context.Context) error {
	t := time.NewTicker(r.renew())
	defer t.Stop()
	var written map[string]string
	var at time.Time
	for {
		if ann := r.annotations(); !maps.Equal(ann, written) || time.Since(at) >= r.renew() {
			if err := r.write(ctx, ann); err != nil {
				r.Log.Error(err, "writing the xDS report Lease") // retried at the next tick or change
			} else {
				written, at = ann, time.Now()
			}
		}
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: LeaseName(r.Replica)}}
			if err := r.Client.Delete(dctx, lease); client.IgnoreNotFound(err) != nil {
				r.Log.Error(err, "deleting the xDS report Lease")
			}
			return nil
		case <-r.kick:
		case <-t.C:
		}
	}
}

func (r *Reporter) write(ctx context.Context, ann map[string]string) error {
	now := metav1.NewMicroTime(time.Now())
	spec := coordinationv1.LeaseSpec{HolderIdentity: ptr.To(r.Replica), RenewTime: &now,
		LeaseDurationSeconds: ptr.To(int32(3 * r.renew() / time.Second))}
	var lease coordinationv1.Lease
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: LeaseName(r.Replica)}, &lease)
	if apierrors.IsNotFound(err) {
		lease = coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: LeaseName(r.Replica),
			Labels: map[string]string{Label: "true"}, Annotations: ann}, Spec: spec}
		return r.Client.Create(ctx, &lease)
	}
	if err != nil {
		return err
	}
	lease.Annotations, lease.Spec = ann, spec
	if lease.Labels == nil {
		lease.Labels = map[string]string{}
	}
	lease.Labels[Label] = "true"
	return r.Client.Update(ctx, &lease)
}

// Peer is what another live replica reports for one fleet.
type Peer struct {
	Replica string
	Proxies int
	// Version all its proxies of the fleet acknowledged ("-": not all of them
	// run its current snapshot).
	Version string
}

// Peers reads the live reports of the replicas other than self for fleet.
func Peers(ctx context.Context, c client.Reader, namespace, self, fleet string, now time.Time) ([]Peer, error) {
	var leases coordinationv1.LeaseList
	if err := c.List(ctx, &leases, client.InNamespace(namespace), client.HasLabels{Label}); err != nil {
		return nil, err
	}
	var out []Peer
	for _, l := range leases.Items {
		holder := ptr.Deref(l.Spec.HolderIdentity, "")
		if holder == self || l.Spec.RenewTime == nil ||
			now.After(l.Spec.RenewTime.Add(time.Duration(ptr.Deref(l.Spec.LeaseDurationSeconds, 0))*time.Second)) {
			continue // ourselves, or a replica that stopped renewing
		}
		v, ok := l.Annotations[annotationPrefix+fleet]
		if !ok {
			continue
		}
		n, version, _ := strings.Cut(v, " ")
		proxies, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		out = append(out, Peer{Replica: holder, Proxies: proxies, Version: version})
	}
	return out, nil
}

// Fleets named in a report Lease (for mapping Lease events to fleets).
func Fleets(l *coordinationv1.Lease) []string {
	var out []string
	for k := range l.Annotations {
		if f, ok := strings.CutPrefix(k, annotationPrefix); ok {
			out = append(out, f)
		}
	}
	return out
}

// LocalXDS is what the leader asks its own xDS server.
type LocalXDS interface {
	Version(fleet string) (string, uint64)
	ConnectedProxies(fleet string) int
}

// Acks combines this replica's acknowledgements with the other replicas'
// reports (implements snapshot.ReplicaAcks).
type Acks struct {
	Client    client.Reader
	Namespace string
	Self      string
	XDS       LocalXDS

	mu   sync.Mutex
	last map[string]uint64
}

// Acked is the newest generation of this replica's snapshot of fleet that
// every proxy, on every live replica, acknowledged, given own (what this
// replica's proxies acknowledged). It never goes back.
func (a *Acks) Acked(ctx context.Context, fleet string, own uint64) (uint64, error) {
	peers, err := Peers(ctx, a.Client, a.Namespace, a.Self, fleet, time.Now())
	if err != nil {
		return 0, err
	}
	version, gen := a.XDS.Version(fleet)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.last == nil {
		a.last = map[string]uint64{}
	}
	result, others := own, 0
	for _, p := range peers {
		if p.Proxies == 0 {
			continue
		}
		if p.Version != version {
			return a.last[fleet], nil // some proxy elsewhere does not run it (yet)
		}
		others += p.Proxies
	}
	if a.XDS.ConnectedProxies(fleet) == 0 && others > 0 {
		result = gen // every proxy is elsewhere, and all run this configuration
	}
	result = max(result, a.last[fleet])
	a.last[fleet] = result
	return result, nil
}
