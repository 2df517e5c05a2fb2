package main

import (
	"bufio"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// controllerTimes prints, per manager controller, its reconciles, the mean
// time in Reconcile and the mean wait in its queue, read from the manager's
// /metrics at the end of the run: where a burst waits.
func controllerTimes(metricsAddr string) error {
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	type stat struct{ reconciles, reconcileSum, waits, waitSum float64 }
	stats := map[string]*stat{}
	get := func(name string) *stat {
		if stats[name] == nil {
			stats[name] = &stat{}
		}
		return stats[name]
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		name, labels, value, ok := metricLine(line)
		if !ok {
			continue
		}
		switch name {
		case "controller_runtime_reconcile_total":
			get(labels["controller"]).reconciles += value
		case "controller_runtime_reconcile_time_seconds_sum":
			get(labels["controller"]).reconcileSum += value
		case "workqueue_queue_duration_seconds_sum":
			get(labels["name"]).waitSum += value
		case "workqueue_queue_duration_seconds_count":
			get(labels["name"]).waits += value
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	names := make([]string, 0, len(stats))
	for n, s := range stats {
		if s.reconciles > 0 {
			names = append(names, n)
		}
	}
	slices.SortFunc(names, func(a, b string) int { return int(stats[b].reconciles - stats[a].reconciles) })
	fmt.Println("manager controllers (whole run, including setup): reconciles, mean Reconcile, mean queue wait:")
	for _, n := range names {
		s := stats[n]
		mean := func(sum, count float64) time.Duration {
			if count == 0 {
				return 0
			}
			return time.Duration(sum / count * float64(time.Second)).Round(100 * time.Microsecond)
		}
		fmt.Printf("  %-32s %6.0f  %9s  %9s\n", n, s.reconciles, mean(s.reconcileSum, s.reconciles), mean(s.waitSum, s.waits))
	}
	return nil
}

// metricLine parses `name{k="v",...} value` (labels without commas or quotes inside).
func metricLine(line string) (string, map[string]string, float64, bool) {
	if line == "" || line[0] == '#' {
		return "", nil, 0, false
	}
	labels := map[string]string{}
	name, rest := line, ""
	if i := strings.IndexByte(line, '{'); i >= 0 {
		j := strings.LastIndexByte(line, '}')
		if j < i {
			return "", nil, 0, false
		}
		name, rest = line[:i], line[j+1:]
		for _, kv := range strings.Split(line[i+1:j], ",") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				labels[k] = strings.Trim(v, `"`)
			}
		}
	} else if n, r, ok := strings.Cut(line, " "); ok {
		name, rest = n, r
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return "", nil, 0, false
	}
	v, err := strconv.ParseFloat(f[0], 64)
	return name, labels, v, err == nil
}
