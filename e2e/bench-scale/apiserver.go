package main

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"k8s.io/client-go/rest"
)

// The management kube-apiserver is a process of the step like the manager:
// on this machine it is often the saturated one, so the step reports the
// writes the objects cost it (from its own apiserver_request_total) and, with
// -profile-dir, its CPU profile.

// apiserver reads the management kube-apiserver's /metrics and pprof
// endpoints with the benchmark's credentials.
type apiserver struct {
	host string
	hc   *http.Client
}

func newAPIServer(cfg *rest.Config) (*apiserver, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	hc.Timeout = 10 * time.Minute
	return &apiserver{host: strings.TrimSuffix(cfg.Host, "/"), hc: hc}, nil
}

func (a *apiserver) get(path string) (*http.Response, error) {
	resp, err := a.hc.Get(a.host + path)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("apiserver %s: %s", path, resp.Status)
	}
	return resp, nil
}

func (a *apiserver) metrics() ([]sample, error) {
	resp, err := a.get("/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return parseMetrics(resp.Body)
}

func (a *apiserver) cpuProfile(seconds int, file string) error {
	resp, err := a.get(fmt.Sprintf("/debug/pprof/profile?seconds=%d", seconds))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return save(resp.Body, file)
}

// isWrite is a verb that changes stored state.
func isWrite(verb string) bool {
	switch verb {
	case "POST", "PUT", "PATCH", "APPLY", "DELETE":
		return true
	}
	return false
}

// fleetWrites is after − before of the apiserver's fleetlb.io write requests,
// by "resource[/subresource] VERB" (409 conflicts counted apart under
// "… conflict").
func fleetWrites(after, before []sample) map[string]float64 {
	out := map[string]float64{}
	add := func(ss []sample, sign float64) {
		for _, s := range ss {
			l := s.labels
			if s.name != "apiserver_request_total" || l["group"] != "fleetlb.io" || !isWrite(l["verb"]) {
				continue
			}
			k := l["resource"]
			if l["subresource"] != "" {
				k += "/" + l["subresource"]
			}
			k += " " + l["verb"]
			if l["code"] == "409" {
				k += " conflict"
			}
			out[k] += sign * s.value
		}
	}
	add(after, 1)
	add(before, -1)
	for k, v := range out {
		if v == 0 {
			delete(out, k)
		}
	}
	return out
}

// otherRequests is after − before of every other request the apiserver
// served (reads, watches, writes of other groups), by "resource VERB":
// what besides the objects' own writes loads it.
func otherRequests(after, before []sample) map[string]float64 {
	out := map[string]float64{}
	add := func(ss []sample, sign float64) {
		for _, s := range ss {
			l := s.labels
			if s.name != "apiserver_request_total" || l["group"] == "fleetlb.io" && isWrite(l["verb"]) {
				continue
			}
			k := l["resource"]
			if l["subresource"] != "" {
				k += "/" + l["subresource"]
			}
			out[k+" "+l["verb"]] += sign * s.value
		}
	}
	add(after, 1)
	add(before, -1)
	for k, v := range out {
		if v == 0 {
			delete(out, k)
		}
	}
	return out
}

// writesLine prints the writes, most first, and the total per object.
func writesLine(w map[string]float64, objects int) string {
	total := 0.0
	for k, v := range w {
		if !strings.HasSuffix(k, "conflict") {
			total += v
		}
	}
	per := 0.0
	if objects > 0 {
		per = total / float64(objects)
	}
	return fmt.Sprintf("%.0f writes (%.2f per object): %s", total, per, strings.Join(mostFirst(w, len(w)), ", "))
}

// mostFirst is up to n "key count" entries of m, the largest counts first.
func mostFirst(m map[string]float64, n int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if m[a] != m[b] {
			return int(m[b] - m[a])
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, 0, min(n, len(keys)))
	for _, k := range keys[:min(n, len(keys))] {
		parts = append(parts, fmt.Sprintf("%s %.0f", k, m[k]))
	}
	return parts
}
