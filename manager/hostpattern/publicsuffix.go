// Package hostpattern holds checks of Tenant hostname patterns shared by the
// Route admission (manager/route) and the Tenant controller (manager/tenant).
package hostpattern

import (
	"strings"

	"golang.org/x/net/publicsuffix"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// PublicSuffix reports whether a Tenant hostname pattern is a public
// suffix (com, co.uk, github.io) or a wildcard directly under one (*.com,
// *.co.uk). Such a pattern would give one tenant every domain registered
// under the suffix, so it allows nothing. CEL cannot know the list: it is
// the Public Suffix List compiled into golang.org/x/net/publicsuffix, ICANN
// and private sections. A single label the list does not name (corp,
// internal) is not a public suffix here, so private top-level names still work.
func PublicSuffix(p v1.Hostname) bool {
	name := strings.TrimPrefix(string(p), "*.")
	suffix, icann := publicsuffix.PublicSuffix(name)
	return suffix == name && (icann || strings.Contains(suffix, "."))
}

// PublicSuffixes are the patterns of ps that are public suffix patterns, in order.
func PublicSuffixes(ps []v1.Hostname) []v1.Hostname {
	var out []v1.Hostname
	for _, p := range ps {
		if PublicSuffix(p) {
			out = append(out, p)
		}
	}
	return out
}
