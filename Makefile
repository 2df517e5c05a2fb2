# fleetlb — see README.md. `make help` lists the targets.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec
.DEFAULT_GOAL := help

CONTROLLER_TOOLS_VERSION ?= v0.23.0
GO_TEST_FLAGS ?= -timeout 30m
# envtest (controller-runtime) finds kube-apiserver, etcd and kubectl here.
export KUBEBUILDER_ASSETS := $(CURDIR)/bin/k8s

BINARIES := fleetlb-manager fleetlb-ccm fleetlb-proxy

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z_-]+:.*## /{printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build the binaries into bin/.
	go build ./...
	go build -o bin/ $(addprefix ./cmd/,$(BINARIES))

# Image metadata: everything comes from the commit, nothing from the clock, so
# the same commit (and Go toolchain) gives the same digests.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
IMAGE_SOURCE ?= https://github.com/fleetlb/fleetlb
PLATFORMS ?= linux/amd64,linux/arm64

.PHONY: images
images: ## Build OCI images (static, nonroot, PLATFORMS) of the binaries into bin/images/<binary>/, no Docker needed.
	go run ./hack/images -out bin/images -platforms $(PLATFORMS) -version $(VERSION) -revision $(REVISION) \
		-source-date-epoch $(SOURCE_DATE_EPOCH) -source $(IMAGE_SOURCE) $(BINARIES)

.PHONY: push
push: images ## Push the images to REGISTRY/<binary>:VERSION (make push REGISTRY=ghcr.io/you; credentials from the Docker config).
	@if [ -z "$(REGISTRY)" ]; then echo "make push REGISTRY=registry.example.com/fleetlb"; exit 2; fi
	go run ./hack/images -out bin/images -push $(REGISTRY) $(BINARIES)

.PHONY: manifests
manifests: ## Render deploy/charts into the plain manifests of deploy/install (and copy deploy/observability into the chart), with Helm's Go SDK.
	go run ./hack/manifests

.PHONY: tools
tools: ## Build (or reuse from ~/.cache/fleetlb) kube-apiserver, etcd and kubectl into bin/k8s/.
	@hack/tools/build.sh >/dev/null

.PHONY: test
test: tools ## Run every test (unit, envtest, xDS feature tests, e2e) against real control planes.
	go test $(GO_TEST_FLAGS) ./...

# Fuzz targets as package:Function; make fuzz runs each for FUZZTIME, one after
# the other (their seed corpora also run in make test, as ordinary tests).
FUZZTIME ?= 10m
FUZZ_FLAGS ?= -fuzzminimizetime=10s
FUZZ_TARGETS := ./envoy/translate:FuzzTranslate ./manager/route:FuzzHostnameOwnership ./manager/ipam:FuzzAllocator

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME (default 10m) one after the other (FUZZ_FLAGS="-parallel 1" spares the CPU).
	@for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "== $$fn ($$pkg) for $(FUZZTIME)"; \
		go test $$pkg -run='^$$' -fuzz="^$$fn\$$" -fuzztime=$(FUZZTIME) $(FUZZ_FLAGS) || exit 1; \
	done

.PHONY: demo
demo: tools ## Run a management cluster, two tenant clusters, manager, ccms, proxy and example Services locally (Ctrl-C stops).
	go build -o bin/demo ./e2e/demo
	bin/demo

.PHONY: bench-propagation
bench-propagation: tools ## Measure apply → address and apply → traffic for N Services (N=100; make bench-propagation N=200).
	go run ./e2e/bench-propagation -n $(or $(N),100)

.PHONY: bench-propagation-gateways
bench-propagation-gateways: tools ## Measure apply → Gateway Programmed and apply → HTTP 200 via its own VIP for N Gateways + HTTPRoutes (N=50).
	go run ./e2e/bench-propagation -gateways -n $(or $(N),50)

.PHONY: bench-propagation-routes
bench-propagation-routes: tools ## Measure apply → Ingress address and apply → HTTPS 200 for N Ingresses with TLS (N=100).
	go run ./e2e/bench-propagation -routes -n $(or $(N),100)

LBS ?= 1000,5000,10000
ROUTES ?= 1000,5000,10000
.PHONY: bench-scale
bench-scale: tools ## Measure 1k/5k/10k LoadBalancers + Routes → admitted, Programmed, reconciles, RSS, one change (LBS=, ROUTES=, BENCH_SCALE_FLAGS=), under the e2e lock.
	flock /tmp/fleetlb-e2e.lock go run ./e2e/bench-scale -lbs $(LBS) -routes $(ROUTES) $(BENCH_SCALE_FLAGS)

.PHONY: bench-failover
bench-failover: tools ## Measure failover between two clusters (L4, L7; refuse, 503, black hole): TRIALS=20 per case, under the e2e lock.
	flock /tmp/fleetlb-e2e.lock go run ./e2e/bench-failover -trials $(or $(TRIALS),20)

.PHONY: conformance
conformance: tools ## Gateway API conformance: the gateway-api suite (GATEWAY-HTTP, GATEWAY-GRPC) against a tenant control plane with the real binaries and hollow Pods; report in docs/conformance/ (README).
	go test -tags conformance -timeout 60m ./e2e/conformance/ -v -count=1

.PHONY: generate
generate: ## Regenerate deepcopy code and the CRDs in deploy/charts/fleetlb/crds/.
	go run sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION) \
		object:headerFile=hack/boilerplate.go.txt paths=./api/... \
		crd:allowDangerousTypes=false output:crd:artifacts:config=deploy/charts/fleetlb/crds

.PHONY: lint
lint: ## gofmt and go vet.
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^hack/tools/')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...
