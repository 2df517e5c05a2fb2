// Package conformance runs the Gateway API conformance suite
// (sigs.k8s.io/gateway-api/conformance, the version in go.mod) against a
// tenant control plane served by the real fleetlb binaries: one management
// cluster with fleetlb-manager, one fleetlb-proxy, one tenant cluster with its
// fleetlb-ccm (GatewayClass "fleetlb"), all started by e2e/harness.
//
// Only API-level tests can pass here: the tenant control plane has no kubelet,
// so the conformance echo Deployments never get Pods, and every test that
// sends a request through the Gateway to them is skipped (see skipped). The
// result table printed at the end is the one in README.md.
//
//	make conformance
//	go test -tags conformance -timeout 30m ./e2e/conformance/ -v
//
// Environment:
//
//	CONFORMANCE_RUN_TEST=Name   run one conformance test only
//	CONFORMANCE_TRAFFIC=1       also run the tests that need Pods (they fail; for exploration)
//	CONFORMANCE_OUTPUT=1        print the binaries' output when the test fails
package conformance
