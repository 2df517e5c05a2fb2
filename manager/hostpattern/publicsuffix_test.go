package hostpattern

import (
	"slices"
	"testing"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// A public suffix, or a wildcard directly under one, is a public suffix
// pattern; names registered under one, and private top-level names, are not.
func TestPublicSuffix(t *testing.T) {
	for p, want := range map[v1.Hostname]bool{
		"com":                  true,
		"*.com":                true,
		"co.uk":                true,
		"*.co.uk":              true,
		"*.uk":                 true,
		"github.io":            true, // private section of the list
		"*.github.io":          true,
		"*.example.com":        false,
		"example.co.uk":        false,
		"*.example.co.uk":      false,
		"team.github.io":       false,
		"*.team-a.example.com": false,
		"*.corp":               false, // not on the list: a private top-level name
		"*.internal.corp":      false,
	} {
		if got := PublicSuffix(p); got != want {
			t.Errorf("PublicSuffix(%s) = %v, want %v", p, got, want)
		}
	}
	got := PublicSuffixes([]v1.Hostname{"*.a.example.com", "*.com", "shop.example.org", "co.uk"})
	if !slices.Equal(got, []v1.Hostname{"*.com", "co.uk"}) {
		t.Errorf("PublicSuffixes = %v", got)
	}
}
