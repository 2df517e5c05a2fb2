package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	servicehelper "k8s.io/cloud-provider/service/helpers"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/e2e/harness"
	"github.com/fleetlb/fleetlb/manager/tenant"
)

// stage is one step of a Service's way to its address, as the watches see it.
type stage int

const (
	stageHeld       stage = iota // the ccm put its cleanup finalizer on the Service
	stageCreated                 // the management LoadBalancer exists
	stageAccepted                // admission gave it an address (Accepted=True)
	stageAddress                 // the ccm copied the address onto the Service
	stageProgrammed              // the fleet acknowledged a configuration with it
	stages
)

var stageNames = [stages]string{"ccm: Service finalizer", "ccm: LoadBalancer created", "manager: Accepted (address)",
	"ccm: address on the Service", "manager: Programmed"}

// timeline is when each stage of one Service was first seen.
type timeline struct {
	applied time.Time
	at      [stages]time.Time
	ip      string
	// addressed is closed when the address is on the Service.
	addressed chan struct{}
}

// stageWatch follows the tenants' Services and the management
// LoadBalancers through informers: no object is polled, and every stage gets
// the time its event arrived.
type stageWatch struct {
	cancel context.CancelFunc
	mu     sync.Mutex
	lines  map[string]*timeline // "<tenant>/<service>"
}

func watchStages(f *harness.Fleet, tenants []*harness.Tenant) (*stageWatch, error) {
	ctx, cancel := context.WithCancel(context.Background())
	w := &stageWatch{cancel: cancel, lines: map[string]*timeline{}}
	start := func(c cache.Cache, o client.Object, seen func(any)) error {
		inf, err := c.GetInformer(ctx, o)
		if err != nil {
			return err
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc: seen, UpdateFunc: func(_, o any) { seen(o) },
		}); err != nil {
			return err
		}
		go func() { _ = c.Start(ctx) }()
		if !c.WaitForCacheSync(ctx) {
			return context.Canceled
		}
		return nil
	}
	for _, tc := range tenants {
		c, err := cache.New(tc.Env.Config, cache.Options{Scheme: tc.Env.Scheme, DefaultNamespaces: map[string]cache.Config{"default": {}}})
		if err != nil {
			cancel()
			return nil, err
		}
		if err := start(c, &corev1.Service{}, func(o any) { w.service(tc.Name, o) }); err != nil {
			cancel()
			return nil, err
		}
	}
	c, err := cache.New(f.Mgmt.Config, cache.Options{Scheme: f.Mgmt.Scheme})
	if err != nil {
		cancel()
		return nil, err
	}
	if err := start(c, &v1.LoadBalancer{}, w.loadBalancer); err != nil {
		cancel()
		return nil, err
	}
	return w, nil
}

func (w *stageWatch) stop() { w.cancel() }

// expect starts the timeline of a Service about to be created.
func (w *stageWatch) expect(tenantName, svc string) *timeline {
	tl := &timeline{applied: time.Now(), addressed: make(chan struct{})}
	w.mu.Lock()
	w.lines[tenantName+"/"+svc] = tl
	w.mu.Unlock()
	return tl
}

// mark records stage s of key at now, if it is the first time.
func (w *stageWatch) mark(key string, s stage, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if tl := w.lines[key]; tl != nil && tl.at[s].IsZero() {
		tl.at[s] = now
	}
}

func (w *stageWatch) service(tenantName string, o any) {
	now := time.Now()
	svc, ok := o.(*corev1.Service)
	if !ok {
		return
	}
	key := tenantName + "/" + svc.Name
	if servicehelper.HasLBFinalizer(svc) {
		w.mark(key, stageHeld, now)
	}
	ing := svc.Status.LoadBalancer.Ingress
	if len(ing) != 1 || ing[0].IPMode == nil || *ing[0].IPMode != corev1.LoadBalancerIPModeProxy {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if tl := w.lines[key]; tl != nil && tl.at[stageAddress].IsZero() {
		tl.at[stageAddress], tl.ip = now, ing[0].IP
		close(tl.addressed)
	}
}

func (w *stageWatch) loadBalancer(o any) {
	now := time.Now()
	lb, ok := o.(*v1.LoadBalancer)
	if !ok {
		return
	}
	name, ok := tenant.Of(lb.Namespace)
	svc, ok2 := strings.CutPrefix(lb.Name, "default.")
	if !ok || !ok2 {
		return
	}
	key := name + "/" + svc
	w.mark(key, stageCreated, now)
	if meta.IsStatusConditionTrue(lb.Status.Conditions, v1.ConditionAccepted) && len(lb.Status.Addresses) > 0 {
		w.mark(key, stageAccepted, now)
	}
	if c := meta.FindStatusCondition(lb.Status.Conditions, v1.ConditionProgrammed); c != nil && c.Status == metav1.ConditionTrue {
		w.mark(key, stageProgrammed, now)
	}
}

// report prints, per stage, apply → stage and the time from the stage
// before (p50/p99 over the Services).
func (w *stageWatch) report() {
	w.mu.Lock()
	defer w.mu.Unlock()
	fmt.Println("stages (from the watches; apply → stage, and previous stage → stage):")
	for s := range stages {
		var total, step []time.Duration
		for _, tl := range w.lines {
			if tl.at[s].IsZero() {
				continue
			}
			total = append(total, tl.at[s].Sub(tl.applied))
			prev := tl.applied
			for p := s - 1; p >= 0; p-- {
				if !tl.at[p].IsZero() && !tl.at[p].After(tl.at[s]) {
					prev = tl.at[p]
					break
				}
			}
			step = append(step, tl.at[s].Sub(prev))
		}
		if len(total) == 0 {
			fmt.Printf("  %-30s not seen\n", stageNames[s])
			continue
		}
		fmt.Printf("  %-30s apply→ p50 %7s p99 %7s | step p50 %7s p99 %7s (%d seen)\n", stageNames[s],
			quantile(total, 0.5), quantile(total, 0.99), quantile(step, 0.5), quantile(step, 0.99), len(total))
	}
}
