// Package e2e runs the real binaries against real control planes through
// e2e/harness: a management cluster and tenant clusters, fleetlb-manager, one
// fleetlb-ccm per tenant, fleetlb-proxy, and echo "nodes" on 127.0.0.0/8.
package e2e

import (
	"github.com/go-logr/logr"
	"net/netip"
	"os"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sync"
	"testing"
	"time"

	"github.com/fleetlb/fleetlb/e2e/harness"
)

// The test's own clients log nothing (and controller-runtime does not warn that
// no logger was set); the binaries' output is shown on failure.
func init() { ctrllog.SetLogger(logr.Discard()) }

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// newHarness builds the binaries once per test process and returns a
// harness that is closed (and its process output shown on failure) at the end of the test.
func newHarness(t *testing.T) *harness.Harness {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "fleetlb-e2e-bin-"); buildErr == nil {
			buildErr = harness.Build(binDir)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	h, err := harness.New(binDir, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(h.Output())
		}
		h.Close()
	})
	return h
}

// check fails the test on err and passes v through.
func check[T any](v T, err error) func(t *testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func eventually(t *testing.T, what string, timeout time.Duration, f func() error) {
	t.Helper()
	if err := harness.Eventually(timeout, f); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// waitAddress waits for the tenant Service's VIP.
func waitAddress(t *testing.T, tc *harness.Tenant, name string) netip.Addr {
	t.Helper()
	ip, err := tc.Address("default", name, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return netip.MustParseAddr(ip)
}
