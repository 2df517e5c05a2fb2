package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// sample is one line of the Prometheus text format.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// scrape reads a /metrics endpoint.
func scrape(url string) ([]sample, error) {
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return parseMetrics(resp.Body)
}

func parseMetrics(r io.Reader) ([]sample, error) {
	var out []sample
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s := sample{labels: map[string]string{}}
		rest := line
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				continue
			}
			s.name, rest = line[:i], line[j+1:]
			for _, kv := range splitLabels(line[i+1 : j]) {
				if k, v, ok := strings.Cut(kv, "="); ok {
					s.labels[k] = strings.Trim(v, `"`)
				}
			}
		} else {
			name, r, ok := strings.Cut(line, " ")
			if !ok {
				continue
			}
			s.name, rest = name, r
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		s.value = v
		out = append(out, s)
	}
	return out, sc.Err()
}

// splitLabels splits `a="x",b="y,z"` at the commas outside quotes.
func splitLabels(s string) []string {
	var out []string
	quoted, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			quoted = !quoted
		case ',':
			if !quoted {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

func sum(ss []sample, name string) float64 {
	t := 0.0
	for _, s := range ss {
		if s.name == name {
			t += s.value
		}
	}
	return t
}

// byController is after − before of a metric, summed per controller label.
func byController(after, before []sample, name string) map[string]float64 {
	out := map[string]float64{}
	for _, s := range after {
		if s.name == name {
			out[s.labels["controller"]] += s.value
		}
	}
	for _, s := range before {
		if s.name == name {
			out[s.labels["controller"]] -= s.value
		}
	}
	for k, v := range out {
		if v == 0 {
			delete(out, k)
		}
	}
	return out
}

// rss reads a process's VmRSS and VmHWM in MiB.
func rss(pid int) (cur, hwm float64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			cur = kb / 1024
		case "VmHWM:":
			hwm = kb / 1024
		}
	}
	return cur, hwm
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times (100 on every
// Linux architecture Go supports).
const clockTicks = 100

// cpuTime is a process's user+system CPU time so far.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which may hold spaces: state is field 3,
	// utime and stime fields 14 and 15.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / clockTicks
}

// cpuWindow is the CPU time of some processes from a start.
type cpuWindow struct {
	procs []*process
	start []time.Duration
	at    time.Time
}

func startCPU(procs ...*process) *cpuWindow {
	w := &cpuWindow{procs: procs, at: time.Now()}
	for _, p := range procs {
		w.start = append(w.start, cpuTime(p.cmd.Process.Pid))
	}
	return w
}

func (w *cpuWindow) used() []time.Duration {
	out := make([]time.Duration, len(w.procs))
	for i, p := range w.procs {
		out[i] = cpuTime(p.cmd.Process.Pid) - w.start[i]
	}
	return out
}

// rates is each process's CPU seconds per second since the start.
func (w *cpuWindow) rates() []float64 {
	el := time.Since(w.at).Seconds()
	out := []float64{}
	for _, u := range w.used() {
		out = append(out, u.Seconds()/el)
	}
	return out
}

// perChange is each process's CPU milliseconds per change since the start,
// above its idle rate.
func (w *cpuWindow) perChange(idleRate []float64, n int) []float64 {
	el := time.Since(w.at).Seconds()
	out := []float64{}
	for i, u := range w.used() {
		out = append(out, max(0, u.Seconds()-idleRate[i]*el)*1000/float64(n))
	}
	return out
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func printTable(w io.Writer, results []*stepResult) {
	if len(results) == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%-5s %6s %6s %8s %10s %10s %10s %22s %22s %18s %18s %s\n", "step", "LBs", "routes", "create", "admitted", "programmed",
		"after last", "manager RSS idle/end/HWM", "proxy RSS idle/end/HWM", "change LB p50/max", "change rt p50/max", "load start → end")
	for _, r := range results {
		fmt.Fprintf(w, "%-5d %6d %6d %7.1fs %9s %10s %10s %22s %22s %18s %18s %s → %s\n", r.Step, r.LoadBalancers, r.Routes, r.CreateSeconds,
			secs(r.AdmittedSeconds), secs(r.ProgrammedSeconds), secs(r.ProgrammedAfterLast),
			fmt.Sprintf("%.0f/%.0f/%.0f MiB", r.ManagerRSSIdle, r.ManagerRSS, r.ManagerHWM),
			fmt.Sprintf("%.0f/%.0f/%.0f MiB", r.ProxyRSSIdle, r.ProxyRSS, r.ProxyHWM),
			lat(r.ChangeLB), lat(r.ChangeRoute), r.LoadAvgStart, r.LoadAvgEnd)
	}
	fmt.Fprintln(w, "one change at that size, write → the proxy serves it (p50/p99/max, samples) and write → Programmed (p50/p99/max), resources pushed per change:")
	for _, r := range results {
		for _, k := range []struct {
			name string
			l    *latencies
		}{{"LoadBalancer", r.ChangeLB}, {"Route", r.ChangeRoute}} {
			if k.l == nil {
				continue
			}
			fmt.Fprintf(w, "  step %d %-12s proxy %s, Programmed %.0f/%.0f/%.0f ms, %.1f pushed, CPU per change manager %.0f ms, proxy %.0f ms\n",
				r.Step, k.name, proxyLat(k.l), k.l.P50, k.l.P99, k.l.Max, k.l.PushedPerChange, k.l.ManagerCPUPerChangeMs, k.l.ProxyCPUPerChangeMs)
		}
	}
	fmt.Fprintln(w, "reconciles (and seconds of reconcile work) per controller:")
	for _, r := range results {
		names := make([]string, 0, len(r.Reconciles))
		for k := range r.Reconciles {
			names = append(names, k)
		}
		slices.SortFunc(names, func(a, b string) int { return int(r.Reconciles[b] - r.Reconciles[a]) })
		var parts []string
		for _, k := range names {
			parts = append(parts, fmt.Sprintf("%s %.0f (%.1fs)", k, r.Reconciles[k], r.ReconcileSeconds[k]))
		}
		fmt.Fprintf(w, "  step %d (%d objects, %d/%d Programmed, %.0f resources pushed): %s\n", r.Step, r.LoadBalancers+r.Routes, r.Programmed,
			r.LoadBalancers+r.Routes, r.PushedResources, strings.Join(parts, ", "))
	}
	fmt.Fprintln(w, "management apiserver writes of fleetlb.io objects (creates included):")
	for _, r := range results {
		fmt.Fprintf(w, "  step %d: %s\n", r.Step, writesLine(r.APIWrites, r.LoadBalancers+r.Routes))
		fmt.Fprintf(w, "  step %d, its other requests (most first): %s\n", r.Step, strings.Join(mostFirst(r.APIOtherRequests, 12), ", "))
	}
}

func secs(s float64) string {
	if s < 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fs", s)
}

func lat(l *latencies) string {
	if l == nil || len(l.Samples) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f/%.0f ms", l.P50, l.Max)
}

// proxyLat is write → the proxy serves it, p50/p99/max.
func proxyLat(l *latencies) string {
	if l == nil || len(l.ProxySamples) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f/%.0f/%.0f ms (%d)", l.ProxyP50, l.ProxyP99, l.ProxyMax, len(l.ProxySamples))
}
