package snapshot

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/testenv"
)

// childCPU is the CPU time (user + system) of this process's child named
// comm (kube-apiserver, etcd: envtest starts them), read from /proc.
type childCPU struct{ pid int }

func findChild(tb testing.TB, comm string) childCPU {
	tb.Helper()
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		open, close := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if open < 0 || close < open || string(b[open+1:close]) != comm {
			continue
		}
		f := strings.Fields(string(b[close+2:]))
		if ppid, _ := strconv.Atoi(f[1]); ppid == os.Getpid() {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			return childCPU{pid}
		}
	}
	tb.Fatalf("no %s started by this process", comm)
	return childCPU{}
}

// clockTick is USER_HZ, the unit of utime and stime in /proc/<pid>/stat (100 on Linux).
const clockTick = 10 * time.Millisecond

func (c childCPU) used(tb testing.TB) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.pid))
	if err != nil {
		tb.Fatal(err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64) // field 14 of stat
	stime, _ := strconv.ParseInt(f[12], 10, 64) // field 15
	return time.Duration(utime+stime) * clockTick
}

// benchLBs creates n LoadBalancers in namespace ns shaped like
// bench-scale's after admission: a spec with one port and the address
// finalizer (created by the ccm), status with Accepted, an address and the
// ports (admission's merge patch); with programmed, also a first Programmed
// (the builder's apply): three managedFields entries.
func benchLBs(tb testing.TB, env *testenv.Env, ns, prefix string, n int, programmed bool) []*v1.LoadBalancer {
	tb.Helper()
	ctx := context.Background()
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
		tb.Fatal(err)
	}
	b := &Builder{Client: env.Client}
	out := make([]*v1.LoadBalancer, n)
	for i := range n {
		name := fmt.Sprint(prefix, i)
		lb := &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Finalizers: []string{v1.FinalizerAddressRelease}},
			Spec: v1.LoadBalancerSpec{
				Source: v1.ServiceSource{Cluster: "bench", Namespace: "default", Name: name, UID: "uid-" + name},
				Ports:  []v1.LoadBalancerPort{{Name: "tcp", Port: 8080, Protocol: v1.ProtocolTCP, NodePort: v1.PortNumber(30000 + i%2000)}},
			}}
		mustTB(tb, env.Client.Create(ctx, lb, client.FieldOwner("fleetlb-ccm")))
		patch := client.MergeFrom(lb.DeepCopy())
		lb.Status.ObservedGeneration = lb.Generation
		lb.Status.Addresses = []v1.Address{{IP: v1.IPAddress(fmt.Sprintf("127.1.%d.%d", i/250%250, i%250+1)), IPMode: v1.IPModeProxy}}
		lb.Status.Ports = v1.PortsSummary(lb.Spec.Ports)
		lb.Status.Conditions = []metav1.Condition{{Type: v1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: v1.ReasonAccepted,
			Message: "address 127.1.0.1 from pool default", LastTransitionTime: metav1.Now(), ObservedGeneration: lb.Generation}}
		mustTB(tb, env.Client.Status().Patch(ctx, lb, patch, client.FieldOwner("fleetlb-manager")))
		if programmed {
			cond := programmedCond(lb, "served by fleet default")
			cond.LastTransitionTime = metav1.NewTime(time.Now().Truncate(time.Second))
			_, err := b.applyProgrammed(ctx, programmedWrite{lb, cond})
			mustTB(tb, err)
			mustTB(tb, env.Client.Get(ctx, client.ObjectKeyFromObject(lb), lb))
		}
		out[i] = lb
	}
	return out
}

// programmedWriter writes one Programmed condition to lb (lb is the
// writer's latest view of the object, updated by the write when it can).
type programmedWriter func(ctx context.Context, c client.Client, lb *v1.LoadBalancer, cond metav1.Condition) error

// BenchmarkProgrammedWriteCost measures what one write of a Programmed
// condition costs the apiserver (CPU of the kube-apiserver and etcd
// processes per write, from /proc) by the form of the write, on
// LoadBalancers shaped like bench-scale's: "first" writes the first
// Programmed of admitted objects (one write per object, the write of a
// bulk create), "change" changes the Programmed they carry (its message
// alternates). 8 writers at once, each on its own objects. Run:
//
//	go test ./manager/snapshot -run xxx -bench BenchmarkProgrammedWriteCost -benchtime 2000x
func BenchmarkProgrammedWriteCost(b *testing.B) {
	env := testenv.Start(b, testenv.Options{})
	cpu := apiserverCPU{apiserver: findChild(b, "kube-apiserver"), etcd: findChild(b, "etcd")}
	const objects = 400
	forms := []struct {
		name  string
		write programmedWriter
	}{
		{"server-side-apply", writeBySSA},
		{"merge-patch-locked", writeByMergePatch},
		{"json-patch-tested", writeByJSONPatch},
	}
	runs := 0
	for _, form := range forms {
		b.Run("first/"+form.name, func(b *testing.B) {
			runs++
			lbs := benchLBs(b, env, "tenant-cost", fmt.Sprintf("first-%d-", runs), b.N, false)
			cpu.measure(b, env, "first-"+form.name, func(ctx context.Context, i, _ int) error {
				return form.write(ctx, env.Client, lbs[i], programmedCond(lbs[i], "served by fleet default"))
			})
		})
	}
	for fi, form := range forms {
		lbs := benchLBs(b, env, "tenant-cost", fmt.Sprintf("change-%d-", fi), objects, true)
		b.Run("change/"+form.name, func(b *testing.B) {
			cpu.measure(b, env, "change-"+form.name, func(ctx context.Context, i, w int) error {
				lb := lbs[(i%(objects/costWriters))*costWriters+w]
				return form.write(ctx, env.Client, lb, programmedCond(lb, fmt.Sprint("served by fleet default (", i%2, ")")))
			})
		})
	}
}

// costWriters write at once in BenchmarkProgrammedWriteCost.
const costWriters = 8

type apiserverCPU struct{ apiserver, etcd childCPU }

// measure runs write(i, writer) for i in [0, b.N), costWriters at once
// (writer w never shares an object with another), and reports the CPU the
// apiserver and etcd used per write.
func (c apiserverCPU) measure(b *testing.B, env *testenv.Env, name string, write func(ctx context.Context, i, writer int) error) {
	ctx := context.Background()
	var wg sync.WaitGroup
	next := make(chan int, costWriters)
	var mu sync.Mutex
	var firstErr error
	profiled := profileAPIServer(b, env, name)
	b.ResetTimer()
	api0, etcd0 := c.apiserver.used(b), c.etcd.used(b)
	for w := range costWriters {
		wg.Go(func() {
			for i := range next {
				if err := write(ctx, i, w); err != nil {
					mu.Lock()
					firstErr = cmpOr(firstErr, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := range b.N {
		next <- i
	}
	close(next)
	wg.Wait()
	api, et := c.apiserver.used(b)-api0, c.etcd.used(b)-etcd0
	b.StopTimer()
	<-profiled
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	b.ReportMetric(float64(api.Microseconds())/float64(b.N), "apiserver-cpu-µs/write")
	b.ReportMetric(float64(et.Microseconds())/float64(b.N), "etcd-cpu-µs/write")
}

// profileAPIServer saves a 5-s CPU profile of the apiserver, taken from now,
// to $STATUS_COST_PROFILE_DIR/<name>.pprof when that is set (read it with
// go tool pprof -top bin/k8s/kube-apiserver <file>). The channel closes when
// it is saved.
func profileAPIServer(b *testing.B, env *testenv.Env, name string) <-chan struct{} {
	done := make(chan struct{})
	dir := os.Getenv("STATUS_COST_PROFILE_DIR")
	if dir == "" || b.N < 100 {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		out, err := env.Kubectl(context.Background(), "get", "--raw", "/debug/pprof/profile?seconds=5")
		if err != nil {
			b.Error(err)
			return
		}
		if err := os.WriteFile(filepath.Join(dir, name+".pprof"), []byte(out), 0o644); err != nil {
			b.Error(err)
		}
	}()
	return done
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// writeBySSA is applyProgrammed, the writer's form.
func writeBySSA(ctx context.Context, c client.Client, lb *v1.LoadBalancer, cond metav1.Condition) error {
	cond.LastTransitionTime = metav1.NewTime(time.Now().Truncate(time.Second))
	_, err := (&Builder{Client: c}).applyProgrammed(ctx, programmedWrite{lb, cond})
	return err
}

// writeByMergePatch replaces status.conditions by a JSON merge patch that
// carries the resourceVersion the conditions were read at (without it the
// patch would drop a condition admission wrote meanwhile; with it, it fails
// with a conflict instead).
func writeByMergePatch(ctx context.Context, c client.Client, lb *v1.LoadBalancer, cond metav1.Condition) error {
	cond.LastTransitionTime = metav1.NewTime(time.Now().Truncate(time.Second))
	patch := client.MergeFromWithOptions(lb.DeepCopy(), client.MergeFromWithOptimisticLock{})
	meta.SetStatusCondition(&lb.Status.Conditions, cond)
	return c.Status().Patch(ctx, lb, patch)
}

// writeByJSONPatch replaces the Programmed entry at its index, tested first.
func writeByJSONPatch(ctx context.Context, c client.Client, lb *v1.LoadBalancer, cond metav1.Condition) error {
	cond.LastTransitionTime = metav1.NewTime(time.Now().Truncate(time.Second))
	w := programmedWrite{lb, cond}
	patch, ok := jsonPatchOf(w)
	if !ok {
		return fmt.Errorf("%s: no Programmed to replace", lb.Name)
	}
	return c.Status().Patch(ctx, lb, patch)
}

func mustTB(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

type jsonPatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

type conditionJSON struct {
	Type               string                 `json:"type"`
	Status             metav1.ConditionStatus `json:"status"`
	ObservedGeneration int64                  `json:"observedGeneration,omitempty"`
	LastTransitionTime string                 `json:"lastTransitionTime"`
	Reason             string                 `json:"reason"`
	Message            string                 `json:"message"`
}

// jsonPatchOf (measured, not used: no cheaper for the apiserver than apply) is a JSON patch that writes w's condition without touching
// another condition: it replaces the Programmed entry at the index the
// object shows it, after testing the entry there is Programmed; with no
// Programmed yet, it appends one after testing the object is still at the
// resourceVersion it was read at. A failed test fails the patch (422 or
// 409) and writes nothing.
func jsonPatchOf(w programmedWrite) (client.Patch, bool) {
	c := w.cond
	value := conditionJSON{Type: c.Type, Status: c.Status, ObservedGeneration: c.ObservedGeneration,
		LastTransitionTime: c.LastTransitionTime.UTC().Format(time.RFC3339), Reason: c.Reason, Message: c.Message}
	conds := conditionsOf(w.obj)
	var ops []jsonPatchOp
	if i := slices.IndexFunc(conds, func(c metav1.Condition) bool { return c.Type == v1.ConditionProgrammed }); i >= 0 {
		ops = []jsonPatchOp{
			{Op: "test", Path: fmt.Sprintf("/status/conditions/%d/type", i), Value: v1.ConditionProgrammed},
			{Op: "replace", Path: fmt.Sprintf("/status/conditions/%d", i), Value: value},
		}
	} else {
		if w.obj.GetResourceVersion() == "" {
			return nil, false
		}
		ops = []jsonPatchOp{{Op: "test", Path: "/metadata/resourceVersion", Value: w.obj.GetResourceVersion()}}
		if len(conds) == 0 {
			ops = append(ops, jsonPatchOp{Op: "add", Path: "/status/conditions", Value: []conditionJSON{value}})
		} else {
			ops = append(ops, jsonPatchOp{Op: "add", Path: "/status/conditions/-", Value: value})
		}
	}
	b, err := json.Marshal(ops)
	if err != nil {
		return nil, false
	}
	return client.RawPatch(types.JSONPatchType, b), true
}

// BenchmarkWriteProgrammedHandOff is what writeProgrammed costs the
// reconcile now that it only hands the conditions to the status writer:
// one ACK that programs 10 000 LoadBalancers (it used to wait for the
// 10 000 writes, StatusWorkers at a time). "needs" is the builder's check
// per served object when nothing is pending.
func BenchmarkWriteProgrammedHandOff(b *testing.B) {
	const n = 10000
	writes := make([]programmedWrite, n)
	for i := range writes {
		lb := &v1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: fmt.Sprint("lb", i), UID: types.UID(fmt.Sprint("uid", i)),
			ResourceVersion: "7", Generation: 1}}
		lb.Status.Conditions = []metav1.Condition{{Type: v1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: v1.ReasonAccepted}}
		writes[i] = programmedWrite{lb, programmedCond(lb, "served by fleet default")}
	}
	b.Run("hand-off", func(b *testing.B) {
		for b.Loop() {
			bld := &Builder{Log: logr.Discard()}
			mustTB(b, bld.writeProgrammed(context.Background(), v1.DefaultFleetName, writes))
			bld.status.dropAll()
		}
	})
	b.Run("needs", func(b *testing.B) {
		bld := &Builder{Log: logr.Discard()}
		for b.Loop() {
			for _, w := range writes {
				if !bld.needsProgrammedWrite(w.obj, &w.cond) {
					b.Fatal("a condition the object lacks needs no write")
				}
			}
		}
	})
}
