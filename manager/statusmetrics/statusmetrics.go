// Package statusmetrics serves the state of fleetlb's objects as Prometheus
// metrics: LoadBalancers and Routes by condition and tenant, since when the
// oldest of them has not been Programmed, Tenant and ProxyFleet conditions,
// and AddressPool usage. It reads the manager's cache at scrape time, and only
// on the elected leader, whose controllers keep those informers: followers
// serve none of these series, so sums over replicas count every object once.
package statusmetrics

import (
	"context"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

var (
	objectsDesc = prometheus.NewDesc("fleetlb_objects",
		"LoadBalancers and Routes by tenant and by the status and reason of each condition (Accepted, Programmed; Routes also ResolvedRefs). A condition not yet written counts as status Unknown, reason Pending.",
		[]string{"kind", "tenant", "condition", "status", "reason"}, nil)
	notProgrammedDesc = prometheus.NewDesc("fleetlb_objects_not_programmed_since_timestamp_seconds",
		"Since when (Unix time) the longest-waiting accepted LoadBalancer or Route of the tenant has not been Programmed: the later of its Accepted and Programmed transitions (its creation when it has no Programmed condition). Objects not Accepted wait for their tenant, not for the fleet, and are not counted. Absent when every accepted object is Programmed.",
		[]string{"kind", "tenant"}, nil)
	tenantDesc = prometheus.NewDesc("fleetlb_tenant_condition",
		"1 for each condition of each Tenant, with its status and reason.",
		[]string{"tenant", "condition", "status", "reason"}, nil)
	fleetDesc = prometheus.NewDesc("fleetlb_proxyfleet_condition",
		"1 for each condition of each ProxyFleet, with its status and reason.",
		[]string{"fleet", "condition", "status", "reason"}, nil)
	poolDesc = prometheus.NewDesc("fleetlb_address_pool_addresses",
		"Addresses of each AddressPool by state: allocated, or available for allocation.",
		[]string{"pool", "state"}, nil)
)

// Collector is a prometheus.Collector over the objects a Reader (the
// manager's cache) holds.
type Collector struct {
	Reader client.Reader
	// Elected is closed once this replica leads; before that Collect serves nothing.
	Elected <-chan struct{}
	Log     logr.Logger
	// Timeout bounds one scrape's reads (default 10s).
	Timeout time.Duration
}

var _ prometheus.Collector = (*Collector)(nil)

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{objectsDesc, notProgrammedDesc, tenantDesc, fleetDesc, poolDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	select {
	case <-c.Elected:
	default:
		return
	}
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	var lbs v1.LoadBalancerList
	var routes v1.RouteList
	var tenants v1.TenantList
	var fleets v1.ProxyFleetList
	var pools v1.AddressPoolList
	for _, l := range []client.ObjectList{&lbs, &routes, &tenants, &fleets, &pools} {
		// Only read: a copy of every object per scrape cost gigabytes at 20 000 objects.
		if err := c.Reader.List(ctx, l, client.UnsafeDisableDeepCopy); err != nil {
			c.Log.Error(err, "reading objects for metrics")
			return
		}
	}

	objs := objectCounts{}
	for i := range lbs.Items {
		lb := &lbs.Items[i]
		objs.add("LoadBalancer", lb.Namespace, lb.CreationTimestamp, lb.Status.Conditions, v1.ConditionAccepted, v1.ConditionProgrammed)
	}
	for i := range routes.Items {
		r := &routes.Items[i]
		objs.add("Route", r.Namespace, r.CreationTimestamp, r.Status.Conditions, v1.ConditionAccepted, v1.ConditionResolvedRefs, v1.ConditionProgrammed)
	}
	objs.collect(ch)

	for i := range tenants.Items {
		t := &tenants.Items[i]
		for _, cond := range t.Status.Conditions {
			ch <- prometheus.MustNewConstMetric(tenantDesc, prometheus.GaugeValue, 1, t.Name, cond.Type, string(cond.Status), cond.Reason)
		}
	}
	for i := range fleets.Items {
		f := &fleets.Items[i]
		for _, cond := range f.Status.Conditions {
			ch <- prometheus.MustNewConstMetric(fleetDesc, prometheus.GaugeValue, 1, f.Name, cond.Type, string(cond.Status), cond.Reason)
		}
	}
	for i := range pools.Items {
		p := &pools.Items[i]
		ch <- prometheus.MustNewConstMetric(poolDesc, prometheus.GaugeValue, float64(p.Status.Allocated), p.Name, "allocated")
		ch <- prometheus.MustNewConstMetric(poolDesc, prometheus.GaugeValue, float64(p.Status.Available), p.Name, "available")
	}
}

type objectKey struct{ kind, tenant, condition, status, reason string }
type waitKey struct{ kind, tenant string }

// objectCounts gathers fleetlb_objects and the oldest not-Programmed time.
type objectCounts struct {
	counts map[objectKey]int
	oldest map[waitKey]time.Time
}

func (o *objectCounts) add(kind, namespace string, created metav1.Time, conds []metav1.Condition, types ...string) {
	if o.counts == nil {
		o.counts, o.oldest = map[objectKey]int{}, map[waitKey]time.Time{}
	}
	name, ok := tenant.Of(namespace)
	if !ok {
		name = ""
	}
	for _, typ := range types {
		status, reason := string(metav1.ConditionUnknown), "Pending"
		if cond := meta.FindStatusCondition(conds, typ); cond != nil {
			status, reason = string(cond.Status), cond.Reason
		}
		o.counts[objectKey{kind, name, typ, status, reason}]++
	}
	accepted := meta.FindStatusCondition(conds, v1.ConditionAccepted)
	programmed := meta.FindStatusCondition(conds, v1.ConditionProgrammed)
	if accepted == nil || accepted.Status != metav1.ConditionTrue || (programmed != nil && programmed.Status == metav1.ConditionTrue) {
		return
	}
	since := created.Time
	if programmed != nil {
		since = programmed.LastTransitionTime.Time
	}
	if accepted.LastTransitionTime.After(since) {
		since = accepted.LastTransitionTime.Time
	}
	k := waitKey{kind, name}
	if t, seen := o.oldest[k]; !seen || since.Before(t) {
		o.oldest[k] = since
	}
}

func (o *objectCounts) collect(ch chan<- prometheus.Metric) {
	for k, n := range o.counts {
		ch <- prometheus.MustNewConstMetric(objectsDesc, prometheus.GaugeValue, float64(n), k.kind, k.tenant, k.condition, k.status, k.reason)
	}
	for k, t := range o.oldest {
		ch <- prometheus.MustNewConstMetric(notProgrammedDesc, prometheus.GaugeValue, float64(t.Unix()), k.kind, k.tenant)
	}
}
