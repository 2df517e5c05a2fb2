// Command bench-scale measures how the management side copes with many
// objects: for each step it starts a fresh management control plane, the real
// fleetlb-manager and one delta fleetlb-proxy, creates the step's LoadBalancers
// and Routes directly in the tenant namespaces (as many ccms would) at a high
// client rate, and reports, from a watch (nothing polls objects):
//
//   - the time until every object is admitted (Accepted=True) and Programmed
//     (Programmed=True at its generation), from the first create and after the
//     last one;
//   - reconciles per controller (the manager's controller_runtime_reconcile_total)
//     and the time they took;
//   - manager and proxy RSS (and high-water mark) from /proc, idle and at the end;
//   - the latency of one change (a LoadBalancer's port, a Route's path) at that
//     size: write → Programmed at the new generation, and the resources pushed
//     for it.
//
// It prints a table and writes JSON (-out). With -profile-dir it saves CPU
// profiles (the manager and the management apiserver over the step, the
// manager and the proxy over each series of changes) and the manager's heap
// profile at the step's end.
//
// Run it under the e2e lock (make bench-scale): it binds loopback VIPs.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/fleetlb/fleetlb/e2e/harness"
	"github.com/fleetlb/fleetlb/internal/testenv"
)

type config struct {
	lbSteps, routeSteps []int
	tenants             int
	stepTimeout         time.Duration
	qps                 float64
	workers             int
	changes             int
	out, profileDir     string
	cpuSeconds          int
	managerArgs         []string
	binDir              string
}

func main() {
	var c config
	lbs := flag.String("lbs", "1000,5000,10000", "LoadBalancers per step, comma-separated (0: none in that step)")
	routes := flag.String("routes", "1000,5000,10000", "Routes per step, comma-separated (0: none); as many entries as -lbs, or one for every step")
	flag.IntVar(&c.tenants, "tenants", 5, "tenants the objects are spread over")
	flag.DurationVar(&c.stepTimeout, "step-timeout", 10*time.Minute, "give up a step (and report how far it got) after this long from its first create")
	flag.Float64Var(&c.qps, "qps", 1000, "client-side rate of the creates (requests per second)")
	flag.IntVar(&c.workers, "workers", 32, "concurrent creates")
	flag.IntVar(&c.changes, "changes", 20, "single changes timed per kind at the end of each step (write → proxy serves it, write → Programmed)")
	flag.StringVar(&c.out, "out", "bin/bench-scale.json", "JSON results file, relative to the module root (empty: none)")
	flag.StringVar(&c.profileDir, "profile-dir", "", "save CPU profiles here: the manager's and the management apiserver's over the step, the manager's and the proxy's over each series of changes; and the manager's heap profile at the step's end")
	flag.IntVar(&c.cpuSeconds, "cpu-profile-seconds", 30, "length of the CPU profile, from the first create")
	margs := flag.String("manager-args", "", "extra fleetlb-manager flags, space-separated (e.g. \"--kube-api-qps=400\")")
	flag.Parse()
	// The watch and the control planes log through controller-runtime: quiet.
	log.SetLogger(logr.Discard())
	var err error
	if c.lbSteps, err = ints(*lbs); err != nil {
		fail(fmt.Errorf("-lbs: %w", err))
	}
	if c.routeSteps, err = ints(*routes); err != nil {
		fail(fmt.Errorf("-routes: %w", err))
	}
	if len(c.routeSteps) == 1 && len(c.lbSteps) > 1 {
		for len(c.routeSteps) < len(c.lbSteps) {
			c.routeSteps = append(c.routeSteps, c.routeSteps[0])
		}
	}
	if len(c.routeSteps) != len(c.lbSteps) {
		fail(fmt.Errorf("-lbs and -routes need as many steps"))
	}
	if c.tenants < 1 || c.tenants > 50 {
		fail(fmt.Errorf("-tenants must be 1-50"))
	}
	for _, n := range c.lbSteps {
		if n > maxLoadBalancers {
			fail(fmt.Errorf("at most %d LoadBalancers per step (the VIP pool)", maxLoadBalancers))
		}
	}
	c.managerArgs = strings.Fields(*margs)

	root, err := testenv.ModuleRoot()
	if err != nil {
		fail(err)
	}
	c.binDir = filepath.Join(root, "bin")
	if c.out != "" && !filepath.IsAbs(c.out) {
		c.out = filepath.Join(root, c.out)
	}
	if err := harness.Build(c.binDir); err != nil {
		fail(err)
	}
	if c.profileDir != "" {
		if err := os.MkdirAll(c.profileDir, 0o755); err != nil {
			fail(err)
		}
	}
	var results []*stepResult
	for i := range c.lbSteps {
		res, err := runStep(context.Background(), &c, i, c.lbSteps[i], c.routeSteps[i])
		if res != nil {
			results = append(results, res)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench-scale: step %d: %v\n", i+1, err)
		}
		printTable(os.Stdout, results)
		if c.out != "" {
			if b, err := json.MarshalIndent(results, "", "  "); err == nil {
				_ = os.WriteFile(c.out, append(b, '\n'), 0o644)
			}
		}
		if err != nil {
			os.Exit(1)
		}
	}
	if c.out != "" {
		fmt.Println("results:", c.out)
	}
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%q is not a count", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench-scale:", err)
	os.Exit(2)
}
