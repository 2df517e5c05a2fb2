package route

import (
	"slices"
	"strings"
	"testing"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/model"
	"github.com/fleetlb/fleetlb/manager/hostpattern"
)

// allowedByLabels is hostname ownership written a second way, label by label:
// an exact pattern allows only itself; "*.suffix" allows every name whose
// labels end with suffix's labels and has at least one more ("*" only as the
// first label), and never suffix alone.
func allowedByLabels(pattern, h string) bool {
	if pattern == h {
		return true
	}
	suffix, ok := strings.CutPrefix(pattern, "*.")
	if !ok {
		return false
	}
	sl, hl := strings.Split(suffix, "."), strings.Split(h, ".")
	if len(hl) <= len(sl) || !slices.Equal(hl[len(hl)-len(sl):], sl) {
		return false
	}
	return !slices.Contains(hl[1:], "*")
}

// coversByLabels: a TLS name covers itself, and "*.suffix" covers a
// non-wildcard name with exactly one more label.
func coversByLabels(tlsHost, h string) bool {
	if tlsHost == h {
		return true
	}
	suffix, ok := strings.CutPrefix(tlsHost, "*.")
	if !ok || strings.HasPrefix(h, "*") {
		return false
	}
	hl := strings.Split(h, ".")
	return len(hl) >= 2 && hl[0] != "" && strings.Join(hl[1:], ".") == suffix
}

// FuzzHostnameOwnership holds Allowed and Covers to their label-wise
// meaning for every valid hostname and pattern, so one tenant's pattern can
// never reach a name outside it (and never panics on anything else).
func FuzzHostnameOwnership(f *testing.F) {
	for _, s := range [][2]string{
		{"*.team-a.example.com", "www.team-a.example.com"},
		{"*.team-a.example.com", "a.b.team-a.example.com"},
		{"*.team-a.example.com", "*.team-a.example.com"},
		{"*.team-a.example.com", "*.x.team-a.example.com"},
		{"*.team-a.example.com", "team-a.example.com"},
		{"*.team-a.example.com", "www.team-ab.example.com"},
		{"*.team-a.example.com", "evilteam-a.example.com"},
		{"*.team-a.example.com", "*.example.com"},
		{"exact.example.org", "exact.example.org"},
		{"exact.example.org", "x.exact.example.org"},
		{"*.com", "a.com"},
		{"*.a.com", "*.b.a.com"},
		{"a.com", "*.a.com"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, h string) {
		allowed := Allowed([]v1.Hostname{v1.Hostname(pattern)}, v1.Hostname(h))
		covers := Covers(v1.Hostname(pattern), v1.Hostname(h))
		if !model.ValidHostname(pattern) || !model.ValidHostname(h) {
			return // the API refuses them; only "no panic" holds
		}
		if hostpattern.PublicSuffix(v1.Hostname(pattern)) {
			if allowed {
				t.Fatalf("Allowed(%q, %q): a public suffix pattern allows nothing", pattern, h)
			}
			return
		}
		if want := allowedByLabels(pattern, h); allowed != want {
			t.Fatalf("Allowed(%q, %q) = %v, want %v", pattern, h, allowed, want)
		}
		if want := coversByLabels(pattern, h); covers != want {
			t.Fatalf("Covers(%q, %q) = %v, want %v", pattern, h, covers, want)
		}
		// A name a certificate covers is one the certificate's pattern allows.
		if covers && !allowed {
			t.Fatalf("Covers(%q, %q) but the pattern does not allow it", pattern, h)
		}
		// Adding an unrelated pattern never takes a name away.
		if allowed && !Allowed([]v1.Hostname{"unrelated.example.net", v1.Hostname(pattern)}, v1.Hostname(h)) {
			t.Fatalf("Allowed depends on the order of patterns")
		}
	})
}
