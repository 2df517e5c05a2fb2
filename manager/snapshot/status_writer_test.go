package snapshot

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/testenv"
)

// writeHook runs before every status write the writer sends to the real
// apiserver; an error it returns is the write's result.
type writeHook func(ctx context.Context, name string) error

// statusWriterUnderTest is a Builder whose only job is writing Programmed
// (its status writer running), counting the writes that reach the apiserver.
type statusWriterUnderTest struct {
	*Builder
	writes atomic.Int64
	leader atomic.Bool
}

func startStatusWriter(t *testing.T, env *testenv.Env, workers int, hook writeHook) *statusWriterUnderTest {
	t.Helper()
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	must(t, err)
	w := &statusWriterUnderTest{}
	w.leader.Store(true)
	before := func(ctx context.Context, name string) error {
		w.writes.Add(1)
		if hook != nil {
			return hook(ctx, name)
		}
		return nil
	}
	c := interceptor.NewClient(wc, interceptor.Funcs{
		SubResourceApply: func(ctx context.Context, c client.Client, sub string, obj runtime.ApplyConfiguration, opts ...client.SubResourceApplyOption) error {
			u := obj.(interface{ GetName() string })
			if err := before(ctx, u.GetName()); err != nil {
				return err
			}
			return c.SubResource(sub).Apply(ctx, obj, opts...)
		},
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			if err := before(ctx, obj.GetName()); err != nil {
				return err
			}
			return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
		},
	})
	w.Builder = &Builder{Client: c, Log: testr.New(t), StatusWorkers: workers, WriteStatus: w.leader.Load}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.runStatusWriter(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

// idle reports whether nothing waits to be written and nothing is in flight
// (a failed write waiting for its retry is waiting).
func (w *statusWriterUnderTest) idle() error {
	s := &w.status
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.want)+len(s.busy) > 0 {
		return fmt.Errorf("%d waiting, %d in flight", len(s.want), len(s.busy))
	}
	return nil
}

func (w *statusWriterUnderTest) desire(t *testing.T, objs ...client.Object) {
	t.Helper()
	var writes []programmedWrite
	for _, o := range objs {
		writes = append(writes, programmedWrite{o, programmedCond(o, "served by fleet default")})
	}
	must(t, w.writeProgrammed(context.Background(), v1.DefaultFleetName, writes))
}

func programmedCond(o client.Object, msg string) metav1.Condition {
	return metav1.Condition{Type: v1.ConditionProgrammed, Status: metav1.ConditionTrue, Reason: v1.ReasonProgrammed, Message: msg, ObservedGeneration: o.GetGeneration()}
}

// acceptedLB creates a LoadBalancer that admission accepted (its status
// written as admission writes it) and returns it as the API has it.
func acceptedLB(t *testing.T, env *testenv.Env, ns, name string) *v1.LoadBalancer {
	t.Helper()
	ctx := context.Background()
	lb := &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: v1.LoadBalancerSpec{
		Source: v1.ServiceSource{Cluster: "c", Namespace: "default", Name: name, UID: "u"},
		Ports:  []v1.LoadBalancerPort{{Port: 80, Protocol: v1.ProtocolTCP, NodePort: 30080}}}}
	must(t, env.Client.Create(ctx, lb))
	patch := client.MergeFrom(lb.DeepCopy())
	lb.Status.Addresses = []v1.Address{{IP: "127.0.50.1", IPMode: v1.IPModeProxy}}
	lb.Status.Ports = v1.PortsSummary(lb.Spec.Ports)
	lb.Status.Conditions = []metav1.Condition{{Type: v1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: v1.ReasonAccepted,
		Message: "admitted", LastTransitionTime: metav1.Now(), ObservedGeneration: lb.Generation}}
	must(t, env.Client.Status().Patch(ctx, lb, patch))
	return lb
}

func getLB(t *testing.T, env *testenv.Env, lb *v1.LoadBalancer) *v1.LoadBalancer {
	t.Helper()
	var got v1.LoadBalancer
	must(t, env.Client.Get(context.Background(), client.ObjectKeyFromObject(lb), &got))
	return &got
}

// programmedMessage is the message of lb's Programmed condition on the API,
// "" when it has none; admission's condition must still be there.
func programmedMessage(t *testing.T, env *testenv.Env, lb *v1.LoadBalancer) string {
	t.Helper()
	got := getLB(t, env, lb)
	if !meta.IsStatusConditionTrue(got.Status.Conditions, v1.ConditionAccepted) {
		t.Fatalf("%s: admission's condition lost: %+v", lb.Name, got.Status.Conditions)
	}
	if c := meta.FindStatusCondition(got.Status.Conditions, v1.ConditionProgrammed); c != nil {
		return c.Message
	}
	return ""
}

func counted(result string) float64 { return testutil.ToFloat64(statusWrites.WithLabelValues(result)) }

// TestStatusWriter: Programmed conditions are written off the reconcile,
// coalesced per object, retried, never rewritten unchanged, and dropped
// when this replica stops being the leader.
func TestStatusWriter(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	const ns = "tenant-w"
	must(t, env.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))

	t.Run("conditions land next to admission's", func(t *testing.T) {
		w := startStatusWriter(t, env, 4, nil)
		var lbs []client.Object
		for i := range 20 {
			lbs = append(lbs, acceptedLB(t, env, ns, fmt.Sprint("land", i)))
		}
		w.desire(t, lbs...)
		testenv.Eventually(t, "writer idle", w.idle)
		for _, o := range lbs {
			lb := o.(*v1.LoadBalancer)
			if msg := programmedMessage(t, env, lb); msg != "served by fleet default" {
				t.Errorf("%s: Programmed %q", lb.Name, msg)
			}
			owned := false
			for _, mf := range getLB(t, env, lb).ManagedFields {
				owned = owned || mf.Manager == FieldOwner && mf.Subresource == "status"
			}
			if !owned {
				t.Errorf("%s: Programmed not written by %s", lb.Name, FieldOwner)
			}
		}
		if n := w.writes.Load(); n != 20 {
			t.Errorf("%d writes for 20 conditions", n)
		}
		// Each object as the write left it is the write's own echo (no
		// rebuild for it); once admission writes again, it is not.
		first := lbs[0].(*v1.LoadBalancer)
		if got := getLB(t, env, first); !w.ownProgrammedEcho(got) {
			t.Errorf("the version the write made (%s) is not taken for its echo", got.ResourceVersion)
		}
		if w.ownProgrammedEcho(first) {
			t.Error("the version before the write is taken for its echo")
		}
		later := getLB(t, env, first)
		patch := client.MergeFrom(later.DeepCopy())
		later.Status.Addresses = []v1.Address{{IP: "127.0.50.2", IPMode: v1.IPModeProxy}}
		must(t, env.Client.Status().Patch(context.Background(), later, patch))
		if w.ownProgrammedEcho(later) {
			t.Error("admission's later write is taken for the echo of the Programmed write")
		}
	})

	t.Run("changes while a write is in flight are coalesced", func(t *testing.T) {
		entered, release := make(chan struct{}), make(chan struct{})
		var once sync.Once
		w := startStatusWriter(t, env, 4, func(ctx context.Context, _ string) error {
			first := false
			once.Do(func() { first = true })
			if first {
				close(entered)
				<-release
			}
			return nil
		})
		lb := acceptedLB(t, env, ns, "burst")
		w.desire(t, lb)
		<-entered
		// The reconcile goes on while the write is blocked; each newer
		// condition replaces the one waiting.
		const n = 30
		for i := range n {
			must(t, w.writeProgrammed(context.Background(), v1.DefaultFleetName,
				[]programmedWrite{{lb, programmedCond(lb, fmt.Sprint("change ", i))}}))
		}
		close(release)
		testenv.Eventually(t, "writer idle", w.idle)
		if got := w.writes.Load(); got != 2 {
			t.Errorf("%d writes for %d changes while one was in flight, want 2", got, n+1)
		}
		if msg := programmedMessage(t, env, lb); msg != fmt.Sprint("change ", n-1) {
			t.Errorf("Programmed %q, want the latest condition", msg)
		}
	})

	t.Run("a failed write is retried", func(t *testing.T) {
		var failures atomic.Int64
		w := startStatusWriter(t, env, 2, func(context.Context, string) error {
			if failures.Add(1) <= 2 {
				return apierrors.NewServiceUnavailable("apiserver busy")
			}
			return nil
		})
		failed := counted("failed")
		lb := acceptedLB(t, env, ns, "retry")
		w.desire(t, lb)
		testenv.Eventually(t, "writer idle", w.idle)
		if msg := programmedMessage(t, env, lb); msg != "served by fleet default" {
			t.Errorf("Programmed %q after two failed writes", msg)
		}
		if got := w.writes.Load(); got != 3 {
			t.Errorf("%d writes, want 2 failed + 1", got)
		}
		if d := counted("failed") - failed; d != 2 {
			t.Errorf("failed writes counted %v, want 2", d)
		}
	})

	t.Run("an unchanged condition is not written", func(t *testing.T) {
		w := startStatusWriter(t, env, 2, nil)
		lb := acceptedLB(t, env, ns, "same")
		w.desire(t, lb)
		testenv.Eventually(t, "writer idle", w.idle)
		if w.writes.Load() != 1 {
			t.Fatalf("%d writes", w.writes.Load())
		}
		// As the object now is, and as a cache that has not seen the write
		// still shows it: neither is written again nor needs a write.
		for what, o := range map[string]*v1.LoadBalancer{"as written": getLB(t, env, lb), "stale cache": lb} {
			cond := programmedCond(o, "served by fleet default")
			if w.needsProgrammedWrite(o, &cond) {
				t.Errorf("%s: the condition it carries needs a write", what)
			}
			w.desire(t, o)
			testenv.Eventually(t, "writer idle", w.idle)
		}
		if got := w.writes.Load(); got != 1 {
			t.Errorf("%d writes of one condition, want 1", got)
		}
		// A condition waiting is replaced by one equal to what the object
		// carries: the object keeps what it carries.
		entered, release := make(chan struct{}), make(chan struct{})
		var once sync.Once
		blocked := startStatusWriter(t, env, 1, func(_ context.Context, name string) error {
			if name == "blocker" {
				once.Do(func() { close(entered); <-release })
			}
			return nil
		})
		blocker := acceptedLB(t, env, ns, "blocker")
		blocked.desire(t, blocker)
		<-entered
		cur := getLB(t, env, lb)
		other := programmedCond(cur, "something else")
		must(t, blocked.writeProgrammed(context.Background(), v1.DefaultFleetName, []programmedWrite{{cur, other}}))
		same := programmedCond(cur, "served by fleet default")
		if !blocked.needsProgrammedWrite(cur, &same) {
			t.Error("a condition waiting is not replaced by the one the object carries")
		}
		must(t, blocked.writeProgrammed(context.Background(), v1.DefaultFleetName, []programmedWrite{{cur, same}}))
		close(release)
		testenv.Eventually(t, "writer idle", blocked.idle)
		if got := blocked.writes.Load(); got != 1 {
			t.Errorf("%d writes, want only the blocker's", got)
		}
		if msg := programmedMessage(t, env, lb); msg != "served by fleet default" {
			t.Errorf("Programmed %q: an older condition was written over the latest", msg)
		}
	})

	t.Run("admission's conditions survive racing writes", func(t *testing.T) {
		raceProgrammedWithAdmission(t, env, ns, func(ctx context.Context, lb *v1.LoadBalancer, cond metav1.Condition) error {
			_, err := (&Builder{Client: env.Client}).applyProgrammed(ctx, programmedWrite{lb, cond})
			return err
		})
	})

	t.Run("a deleted object is dropped", func(t *testing.T) {
		w := startStatusWriter(t, env, 2, nil)
		gone := &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gone", UID: types.UID("gone-uid"), Generation: 1}}
		notFound := counted("not_found")
		w.desire(t, gone)
		testenv.Eventually(t, "writer idle", w.idle)
		if got := w.writes.Load(); got != 1 {
			t.Errorf("%d writes, want 1 (no retry)", got)
		}
		if d := counted("not_found") - notFound; d != 1 {
			t.Errorf("not_found counted %v, want 1", d)
		}
	})

	t.Run("leadership lost drops what waits", func(t *testing.T) {
		entered, release := make(chan struct{}), make(chan struct{})
		var once sync.Once
		w := startStatusWriter(t, env, 1, func(context.Context, string) error {
			once.Do(func() { close(entered); <-release })
			return nil
		})
		first := acceptedLB(t, env, ns, "lead0")
		w.desire(t, first)
		<-entered
		var rest []client.Object
		for i := 1; i <= 5; i++ {
			rest = append(rest, acceptedLB(t, env, ns, fmt.Sprint("lead", i)))
		}
		w.desire(t, rest...)
		w.leader.Store(false)
		close(release)
		testenv.Eventually(t, "writer idle", w.idle)
		w.desire(t, acceptedLB(t, env, ns, "lead6")) // decided by a replica that no longer leads
		if err := w.idle(); err != nil {
			t.Errorf("a replica that does not lead queued a write: %v", err)
		}
		if got := w.writes.Load(); got != 1 {
			t.Errorf("%d writes after leadership was lost, want only the one in flight", got)
		}
		for _, o := range rest {
			if msg := programmedMessage(t, env, o.(*v1.LoadBalancer)); msg != "" {
				t.Errorf("%s: Programmed %q written after leadership was lost", o.GetName(), msg)
			}
		}
		// Leading again, the conditions are decided and written afresh.
		w.leader.Store(true)
		w.desire(t, rest...)
		testenv.Eventually(t, "writer idle", w.idle)
		for _, o := range rest {
			if msg := programmedMessage(t, env, o.(*v1.LoadBalancer)); msg == "" {
				t.Errorf("%s: not Programmed after leading again", o.GetName())
			}
		}
	})
}

// raceProgrammedWithAdmission writes Programmed with write while admission
// rewrites its Accepted condition (as admission does: a merge patch of the
// status it read) on the same objects, and checks that every object ends
// with admission's last condition.
func raceProgrammedWithAdmission(t *testing.T, env *testenv.Env, ns string, write func(context.Context, *v1.LoadBalancer, metav1.Condition) error) {
	ctx := context.Background()
	const objects, rounds = 6, 25
	var lbs []*v1.LoadBalancer
	for i := range objects {
		lbs = append(lbs, acceptedLB(t, env, ns, fmt.Sprint("race", i)))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*objects*rounds)
	for _, lb := range lbs {
		wg.Go(func() { // admission
			for r := range rounds {
				var cur v1.LoadBalancer
				if err := env.Client.Get(ctx, client.ObjectKeyFromObject(lb), &cur); err != nil {
					errs <- err
					return
				}
				patch := client.MergeFrom(cur.DeepCopy())
				meta.SetStatusCondition(&cur.Status.Conditions, metav1.Condition{Type: v1.ConditionAccepted, Status: metav1.ConditionTrue,
					Reason: v1.ReasonAccepted, Message: fmt.Sprint("admission ", r), ObservedGeneration: cur.Generation})
				if err := env.Client.Status().Patch(ctx, &cur, patch); err != nil {
					errs <- err
				}
			}
		})
		wg.Go(func() { // the status writer
			for r := range rounds {
				var cur v1.LoadBalancer
				if err := env.Client.Get(ctx, client.ObjectKeyFromObject(lb), &cur); err != nil {
					errs <- err
					return
				}
				cond := programmedCond(&cur, fmt.Sprint("programmed ", r))
				cond.LastTransitionTime = metav1.Now()
				if err := write(ctx, &cur, cond); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, lb := range lbs {
		got := getLB(t, env, lb)
		c := meta.FindStatusCondition(got.Status.Conditions, v1.ConditionAccepted)
		if c == nil || c.Message != fmt.Sprint("admission ", rounds-1) {
			t.Errorf("%s: admission's last condition lost: %+v", lb.Name, got.Status.Conditions)
		}
	}
}
