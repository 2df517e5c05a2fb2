// Package conformance runs the Gateway API conformance suite
// (sigs.k8s.io/gateway-api/conformance, the version in go.mod), profiles
// GATEWAY-HTTP and GATEWAY-GRPC with the extended features fleetlb claims,
// against a tenant control plane served by the real fleetlb binaries: one
// management cluster with fleetlb-manager, one fleetlb-proxy, one tenant
// cluster with its fleetlb-ccm (GatewayClass "fleetlb"), all started by
// e2e/harness, and hollow Pods (e2e/hollow) behind the tenant's node ports
// that answer as the suite's echo-basic Pods. It writes the suite's
// ConformanceReport to docs/conformance/ and fails on any failed test. The
// result table printed at the end is the one in README.md.
//
//	make conformance
//	go test -tags conformance -timeout 60m ./e2e/conformance/ -v
//
// Environment:
//
//	CONFORMANCE_RUN_TEST=Name   run one conformance test only (no report written)
//	CONFORMANCE_DEBUG=1         the suite's debug output (requests and replies)
//	CONFORMANCE_OUTPUT=1        print the binaries' output when the test fails
package conformance
