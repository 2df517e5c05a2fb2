// Command bench-failover measures failover between two tenant clusters of one
// group: it runs a whole fleet on this machine (e2e/harness), serves one global
// name from both clusters with strategy failover (an L4 LoadBalancer Service
// with a global name, and an Ingress for the same hostname in both clusters),
// sends client traffic at a steady rate, makes the priority-0 cluster's backend
// fail (node port refuses, backend answers 503, node black-holes), and reports
// p50/p99 of the time until every new request reaches the priority-1 cluster,
// the client requests that failed meanwhile, and the time to fail back once the
// backend recovers.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

type config struct {
	trials      int
	cases       []string
	modes       []string
	interval    time.Duration
	consecutive int
	phase       time.Duration // bound on one failover or fail-back
	reqTimeout  time.Duration
	jsonOut     string
	timeout     time.Duration
	settle      time.Duration // backends run this long before the first kill
}

func main() {
	var c config
	var cases, modes string
	flag.IntVar(&c.trials, "trials", 20, "trials per case and kill mode (1-1000)")
	flag.StringVar(&cases, "cases", "l4,l7", "cases to run: l4 (TCP LoadBalancer with a global name), l7 (HTTP Ingress on a shared hostname), both with strategy failover; l4w, l7w the same with strategy weighted (1:1); l7g a gRPC backend behind the Ingress, strategy failover")
	flag.StringVar(&modes, "modes", "refuse,503,blackhole", "kill modes: refuse (node port closed), 503 (backend answers 503; L7 only), blackhole (SYNs dropped)")
	flag.DurationVar(&c.interval, "interval", 20*time.Millisecond, "one client request (L7) or connection (L4) every interval")
	flag.IntVar(&c.consecutive, "consecutive", 10, "failover (fail-back) is complete when this many consecutive requests reach the other cluster")
	flag.DurationVar(&c.phase, "phase-timeout", 60*time.Second, "give up on one failover or fail-back after this long")
	flag.DurationVar(&c.reqTimeout, "request-timeout", 2*time.Second, "a client request that takes longer has failed")
	flag.StringVar(&c.jsonOut, "json", filepath.Join(os.TempDir(), "fleetlb-bench-failover.json"), "write the samples and percentiles here")
	flag.DurationVar(&c.timeout, "timeout", 40*time.Minute, "give up after this long")
	flag.DurationVar(&c.settle, "settle", 10*time.Second, "let the backends run this long before the first kill, as a standby cluster's would have (0: kill as soon as the primary serves)")
	flag.Parse()
	c.cases, c.modes = strings.Split(cases, ","), strings.Split(modes, ",")
	if c.trials < 1 || c.trials > 1000 || c.consecutive < 1 || c.interval < time.Millisecond {
		fmt.Fprintln(os.Stderr, "bench-failover: -trials must be 1-1000, -consecutive ≥ 1, -interval ≥ 1ms")
		os.Exit(2)
	}
	for _, m := range c.modes {
		if m != modeRefuse && m != mode503 && m != modeBlackhole {
			fmt.Fprintf(os.Stderr, "bench-failover: unknown kill mode %q\n", m)
			os.Exit(2)
		}
	}
	for _, k := range c.cases {
		if k != "l4" && k != "l7" && k != "l4w" && k != "l7w" && k != "l7g" {
			fmt.Fprintf(os.Stderr, "bench-failover: unknown case %q\n", k)
			os.Exit(2)
		}
	}
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "bench-failover:", err)
		os.Exit(1)
	}
}

// trial is one kill and one restore.
type trial struct {
	Failover        time.Duration  `json:"failoverNs"`
	FailedFailover  int            `json:"failedDuringFailover"`
	FailoverKinds   map[string]int `json:"failedDuringFailoverKinds,omitempty"` // timeout, refused, reset, status NNN, ...
	SlowestFailover time.Duration  `json:"slowestDuringFailoverNs"`             // the longest answered request from the kill to the switch
	Failback        time.Duration  `json:"failbackNs"`
	FailedFailback  int            `json:"failedDuringFailback"`
	FailbackKinds   map[string]int `json:"failedDuringFailbackKinds,omitempty"`
}

func total(kinds map[string]int) int {
	n := 0
	for _, v := range kinds {
		n += v
	}
	return n
}

type caseResult struct {
	Case   string  `json:"case"`
	Mode   string  `json:"mode"`
	Trials []trial `json:"trials"`
	Error  string  `json:"error,omitempty"`

	FailoverP50     time.Duration  `json:"failoverP50Ns"`
	FailoverP99     time.Duration  `json:"failoverP99Ns"`
	FailoverMax     time.Duration  `json:"failoverMaxNs"`
	FailbackP50     time.Duration  `json:"failbackP50Ns"`
	FailbackP99     time.Duration  `json:"failbackP99Ns"`
	FailbackMax     time.Duration  `json:"failbackMaxNs"`
	SlowestP50      time.Duration  `json:"slowestDuringFailoverP50Ns"`
	SlowestMax      time.Duration  `json:"slowestDuringFailoverMaxNs"`
	FailedTotal     int            `json:"failedDuringFailoverTotal"`
	FailedMax       int            `json:"failedDuringFailoverMax"` // worst trial
	FailedBackTotal int            `json:"failedDuringFailbackTotal"`
	FailedKinds     map[string]int `json:"failedKinds,omitempty"` // during failover and fail-back, all trials
}

type report struct {
	Started     time.Time    `json:"started"`
	Command     string       `json:"command"`
	LoadAvg     []string     `json:"loadavg"` // /proc/loadavg before and after
	Interval    string       `json:"interval"`
	Consecutive int          `json:"consecutive"`
	Results     []caseResult `json:"results"`
}

func run(c config) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	rep := report{Started: time.Now().UTC(), Command: strings.Join(os.Args, " "), LoadAvg: []string{loadavg()},
		Interval: c.interval.String(), Consecutive: c.consecutive}
	env, err := newFleet()
	if err != nil {
		return err
	}
	defer env.close()
	for _, k := range c.cases {
		setup, strategy := env.l4, v1.StrategyFailover
		if strings.HasPrefix(k, "l7") {
			setup = env.l7
		}
		if strings.HasSuffix(k, "w") {
			strategy = v1.StrategyWeighted
		}
		if k == "l7g" {
			setup = env.l7gRPC
		}
		tgt, err := setup(ctx, strategy)
		if err != nil {
			return env.failed(fmt.Errorf("%s: %w", k, err))
		}
		for _, m := range c.modes {
			if m == mode503 && (strings.HasPrefix(k, "l4") || k == "l7g") {
				continue // a TCP backend has no status to answer
			}
			res := runCase(ctx, c, tgt, k, m)
			rep.Results = append(rep.Results, res)
			printRow(res)
		}
		tgt.close()
	}
	rep.LoadAvg = append(rep.LoadAvg, loadavg())
	printTable(rep)
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(c.jsonOut, b, 0o644); err != nil {
		return err
	}
	fmt.Println("samples written to", c.jsonOut)
	return nil
}

// runCase runs the trials of one case and kill mode with steady traffic.
func runCase(ctx context.Context, c config, tgt *target, k, mode string) caseResult {
	res := caseResult{Case: k, Mode: mode}
	tctx, stop := context.WithCancel(ctx)
	defer stop()
	var tr traffic
	maxRequests := int(c.timeout / c.interval)
	go tr.run(tctx, tgt.probe(c.reqTimeout), c.interval, 200, maxRequests)
	defer tr.wg.Wait()
	defer stop()
	// Steady state first: the priority-0 cluster serves (weighted: both do;
	// and fail-back is then the first answer from the restored cluster).
	backN := c.consecutive
	if tgt.weighted {
		backN = 1
		if _, _, _, err := tr.waitSettled(tr.mark(), tgt.secondary.id.Cluster, 1, c.interval, 2*c.phase); err != nil {
			res.Error = "before the first trial: " + err.Error()
			return res
		}
	}
	if _, _, _, err := tr.waitSettled(tr.mark(), tgt.primary.id.Cluster, backN, c.interval, 2*c.phase); err != nil {
		res.Error = "before the first trial: " + err.Error()
		return res
	}
	// The standby's backend started with the primary's: until the proxy's
	// health checks (every no_traffic_interval, 5 s, on a cluster without
	// traffic yet, healthy_threshold 2) have passed it, it is not available.
	// A real standby has been up for long; the first kill waits as long.
	if c.settle > 0 {
		select {
		case <-ctx.Done():
		case <-time.After(c.settle):
		}
	}
	for i := range c.trials {
		if ctx.Err() != nil {
			res.Error = fmt.Sprintf("timeout after %d trials", i)
			break
		}
		var t trial
		killed := time.Now()
		from := tr.mark()
		if err := tgt.primary.kill(mode); err != nil {
			res.Error = err.Error()
			break
		}
		first, failed, slowest, err := tr.waitSettled(from, tgt.secondary.id.Cluster, c.consecutive, c.interval, c.phase)
		if err != nil {
			res.Error = fmt.Sprintf("trial %d failover: %v", i, err)
			_ = tgt.primary.restore(mode)
			break
		}
		t.Failover, t.FailedFailover, t.FailoverKinds, t.SlowestFailover = max(0, tr.startOf(first).Sub(killed)), total(failed), failed, slowest

		restored := time.Now()
		from = tr.mark()
		if err := tgt.primary.restore(mode); err != nil {
			res.Error = err.Error()
			break
		}
		first, failed, _, err = tr.waitSettled(from, tgt.primary.id.Cluster, backN, c.interval, c.phase)
		if err != nil {
			res.Error = fmt.Sprintf("trial %d fail-back: %v", i, err)
			break
		}
		t.Failback, t.FailedFailback, t.FailbackKinds = max(0, tr.startOf(first).Sub(restored)), total(failed), failed
		res.Trials = append(res.Trials, t)
	}
	summarize(&res)
	return res
}

func summarize(res *caseResult) {
	n := len(res.Trials)
	if n == 0 {
		return
	}
	q := func(get func(trial) time.Duration, p float64) time.Duration {
		ds := make([]time.Duration, n)
		for i, t := range res.Trials {
			ds[i] = get(t)
		}
		slices.Sort(ds)
		return ds[min(n-1, int(p*float64(n)))]
	}
	fo := func(t trial) time.Duration { return t.Failover }
	fb := func(t trial) time.Duration { return t.Failback }
	res.FailoverP50, res.FailoverP99, res.FailoverMax = q(fo, 0.5), q(fo, 0.99), q(fo, 1)
	res.FailbackP50, res.FailbackP99, res.FailbackMax = q(fb, 0.5), q(fb, 0.99), q(fb, 1)
	sl := func(t trial) time.Duration { return t.SlowestFailover }
	res.SlowestP50, res.SlowestMax = q(sl, 0.5), q(sl, 1)
	res.FailedKinds = map[string]int{}
	for _, t := range res.Trials {
		for k, v := range t.FailoverKinds {
			res.FailedKinds[k] += v
		}
		for k, v := range t.FailbackKinds {
			res.FailedKinds[k] += v
		}
		res.FailedTotal += t.FailedFailover
		res.FailedMax = max(res.FailedMax, t.FailedFailover)
		res.FailedBackTotal += t.FailedFailback
	}
}

const header = "%-4s %-10s %6s  %10s %10s %10s  %12s  %10s %10s  %10s %10s %10s  %12s\n"

func printRow(r caseResult) {
	ms := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	fmt.Printf(header, r.Case, r.Mode, fmt.Sprint(len(r.Trials)), ms(r.FailoverP50), ms(r.FailoverP99), ms(r.FailoverMax),
		fmt.Sprintf("%d (max %d)", r.FailedTotal, r.FailedMax), ms(r.SlowestP50), ms(r.SlowestMax), ms(r.FailbackP50), ms(r.FailbackP99), ms(r.FailbackMax), fmt.Sprint(r.FailedBackTotal))
	if len(r.FailedKinds) > 0 {
		fmt.Printf("     failed requests by kind: %v\n", r.FailedKinds)
	}
	if r.Error != "" {
		fmt.Printf("     %s/%s stopped: %s\n", r.Case, r.Mode, r.Error)
	}
}

func printTable(rep report) {
	fmt.Printf("\nfailover between two clusters of one group (strategy failover), a request every %s, done at %d consecutive; load average %s → %s\n",
		rep.Interval, rep.Consecutive, rep.LoadAvg[0], rep.LoadAvg[len(rep.LoadAvg)-1])
	fmt.Printf(header, "case", "kill", "trials", "fo p50", "fo p99", "fo max", "failed", "slow p50", "slow max", "fb p50", "fb p99", "fb max", "failed (fb)")
	for _, r := range rep.Results {
		printRow(r)
	}
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// failed returns err, with the processes' output saved beside it.
func (e *fleetEnv) failed(err error) error {
	out := filepath.Join(os.TempDir(), "fleetlb-bench-failover-processes.log")
	_ = os.WriteFile(out, []byte(e.h.Output()), 0o644)
	return fmt.Errorf("%w (process output in %s)", err, out)
}
