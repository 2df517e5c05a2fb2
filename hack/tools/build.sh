#!/usr/bin/env bash
# Builds kube-apiserver, etcd and kubectl for the test control planes into a
# per-user, per-version cache and links them into bin/k8s/ (what envtest's
# KUBEBUILDER_ASSETS points at). A second run with the same inputs only relinks.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
k8s_version=v1.37.1
# The cache key covers everything that decides the binaries' bytes.
key=$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" "$here"/*/main.go | sha256sum | cut -c1-12)
cache=${FLEETLB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fleetlb}/k8s-$k8s_version-$key
out=$root/bin/k8s

if [[ ! -x $cache/kube-apiserver || ! -x $cache/etcd || ! -x $cache/kubectl ]]; then
	command -v go >/dev/null || { echo "build.sh: go is not on PATH; install Go 1.26 first" >&2; exit 1; }
	echo "building kube-apiserver, etcd and kubectl $k8s_version into $cache (about 10 minutes the first time)" >&2
	tmp=$(mktemp -d "${cache%/*}/.build.XXXXXX" 2>/dev/null || { mkdir -p "${cache%/*}"; mktemp -d "${cache%/*}/.build.XXXXXX"; })
	trap 'rm -rf "$tmp"' EXIT
	pkgs=(k8s.io/component-base/version k8s.io/client-go/pkg/version)
	ldflags="-s -w"
	for p in "${pkgs[@]}"; do
		ldflags+=" -X $p.gitVersion=$k8s_version -X $p.gitMajor=1 -X $p.gitMinor=37"
		ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
	done
	# Two linkers at 2.4 GB each fit; more would not on a small machine.
	if ! (cd "$here" && go build -p "${BUILD_PARALLELISM:-2}" -trimpath -ldflags "$ldflags" -o "$tmp/" ./kube-apiserver ./etcd ./kubectl); then
		echo "build.sh: building the control plane failed. Check that the Go module proxy is reachable (go env GOPROXY) and that there is ~4 GB of free memory, then run 'make tools' again." >&2
		exit 1
	fi
	mkdir -p "$cache"
	mv "$tmp"/kube-apiserver "$tmp"/etcd "$tmp"/kubectl "$cache"/
fi

mkdir -p "$out"
for b in kube-apiserver etcd kubectl; do
	ln -sfn "$cache/$b" "$out/$b"
done
echo "$out"
