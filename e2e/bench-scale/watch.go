package main

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// counts are how many watched objects are admitted and Programmed.
type counts struct{ admitted, programmed int }

// objState is what the watch last saw of one object.
type objState struct {
	admitted bool
	// programmed is the generation Programmed=True was last seen at (0: none).
	programmed int64
}

// watcher follows LoadBalancers and Routes through an informer: every wait
// wakes on an event, nothing polls the apiserver.
type watcher struct {
	cancel context.CancelFunc

	mu      sync.Mutex
	objs    map[string]objState
	c       counts
	changed chan struct{}
}

func newWatcher(ctx context.Context, cfg *rest.Config, scheme *runtime.Scheme) (*watcher, error) {
	ctx, cancel := context.WithCancel(ctx)
	c, err := cache.New(cfg, cache.Options{Scheme: scheme})
	if err != nil {
		cancel()
		return nil, err
	}
	w := &watcher{cancel: cancel, objs: map[string]objState{}, changed: make(chan struct{})}
	for _, o := range []client.Object{&v1.LoadBalancer{}, &v1.Route{}} {
		inf, err := c.GetInformer(ctx, o)
		if err != nil {
			cancel()
			return nil, err
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { w.update(o) },
			UpdateFunc: func(_, o any) { w.update(o) },
			DeleteFunc: func(o any) { w.remove(o) },
		}); err != nil {
			cancel()
			return nil, err
		}
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		cancel()
		return nil, context.Canceled
	}
	return w, nil
}

func (w *watcher) stop() { w.cancel() }

func keyOf(o client.Object) string {
	prefix := "lb/"
	if _, ok := o.(*v1.Route); ok {
		prefix = "route/"
	}
	return prefix + o.GetNamespace() + "/" + o.GetName()
}

func stateOf(o client.Object) objState {
	var conds []metav1.Condition
	switch x := o.(type) {
	case *v1.LoadBalancer:
		conds = x.Status.Conditions
	case *v1.Route:
		conds = x.Status.Conditions
	}
	var s objState
	if c := meta.FindStatusCondition(conds, v1.ConditionAccepted); c != nil && c.Status == metav1.ConditionTrue {
		s.admitted = true
	}
	if c := meta.FindStatusCondition(conds, v1.ConditionProgrammed); c != nil && c.Status == metav1.ConditionTrue &&
		c.ObservedGeneration == o.GetGeneration() {
		s.programmed = o.GetGeneration()
	}
	return s
}

func (w *watcher) update(obj any) {
	o, ok := obj.(client.Object)
	if !ok {
		return
	}
	k, s := keyOf(o), stateOf(o)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.account(w.objs[k], -1)
	w.account(s, 1)
	w.objs[k] = s
	w.notifyLocked()
}

func (w *watcher) remove(obj any) {
	if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	o, ok := obj.(client.Object)
	if !ok {
		return
	}
	k := keyOf(o)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.account(w.objs[k], -1)
	delete(w.objs, k)
	w.notifyLocked()
}

func (w *watcher) account(s objState, d int) {
	if s.admitted {
		w.c.admitted += d
	}
	if s.programmed != 0 {
		w.c.programmed += d
	}
}

func (w *watcher) notifyLocked() {
	close(w.changed)
	w.changed = make(chan struct{})
}

func (w *watcher) counts() counts {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.c
}

// waitUntil returns when cond first holds (zero time: not before deadline,
// or a check failed). The checks (processes alive) run each second.
func (w *watcher) waitUntil(deadline time.Time, cond func(counts) bool, checks ...func() error) time.Time {
	return w.wait(deadline, func() bool { return cond(w.c) }, checks...)
}

// waitProgrammed returns when the object is Programmed at generation gen or later.
func (w *watcher) waitProgrammed(key client.ObjectKey, gen int64, timeout time.Duration) time.Time {
	lb, rt := "lb/"+key.String(), "route/"+key.String()
	return w.waitUntilState(time.Now().Add(timeout), func(objs map[string]objState) bool {
		return objs[lb].programmed >= gen || objs[rt].programmed >= gen
	})
}

func (w *watcher) waitUntilState(deadline time.Time, cond func(map[string]objState) bool) time.Time {
	return w.wait(deadline, func() bool { return cond(w.objs) })
}

// wait returns when cond (called with w.mu held) first holds, woken by every
// watch event; zero time when the deadline passes or a check (run each
// second) fails first.
func (w *watcher) wait(deadline time.Time, cond func() bool, checks ...func() error) time.Time {
	for {
		w.mu.Lock()
		ok, ch := cond(), w.changed
		w.mu.Unlock()
		if ok {
			return time.Now()
		}
		left := time.Until(deadline)
		if left <= 0 {
			return time.Time{}
		}
		select {
		case <-ch:
		case <-time.After(min(left, time.Second)):
			for _, check := range checks {
				if check() != nil {
					return time.Time{}
				}
			}
		}
	}
}
