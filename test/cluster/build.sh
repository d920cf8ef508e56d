#!/usr/bin/env bash
# Builds (or reuses) the pinned third-party binaries the cluster e2e suite runs:
# containerd + ctr + shim, crictl, the CNI plugins, etcd, and the kubelet,
# kube-apiserver, kube-scheduler and kube-controller-manager. The suite talks
# to the API server through client-go, so no kubectl is built.
# Each component lands in $E2E_CACHE_DIR/<name>-<version>/ and is only reused
# once its .complete stamp exists, so an interrupted build is redone, not trusted.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
E2E_CACHE_DIR=${E2E_CACHE_DIR:-/var/cache/intel-gpu-cdi-e2e}

log() { printf '%s build: %s\n' "$(date +%T)" "$*" >&2; }

# build_component NAME VERSION FUNC: runs FUNC OUTDIR into a scratch dir and
# moves it into place atomically, so a half-built component never looks done.
build_component() {
	local name=$1 version=$2 fn=$3
	local dest="$E2E_CACHE_DIR/$name-$version"
	if [[ -f $dest/.complete ]]; then
		log "$name $version: cached in $dest"
		return 0
	fi
	local tmp
	tmp=$(mktemp -d "$E2E_CACHE_DIR/.$name-$version.XXXXXX")
	chmod 755 "$tmp"
	local start=$SECONDS
	log "$name $version: building"
	if ! "$fn" "$tmp" "$version"; then
		rm -rf "$tmp"
		log "$name $version: FAILED"
		return 1
	fi
	date -u +%FT%TZ >"$tmp/.complete"
	rm -rf "$dest"
	mv "$tmp" "$dest"
	log "$name $version: built in $((SECONDS - start))s"
}

build_containerd() {
	GOBIN=$1 CGO_ENABLED=1 go install -tags no_btrfs \
		"github.com/containerd/containerd/v2/cmd/containerd@$2" \
		"github.com/containerd/containerd/v2/cmd/ctr@$2" \
		"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$2"
}

build_crictl() {
	GOBIN=$1 go install "sigs.k8s.io/cri-tools/cmd/crictl@$2"
}

build_cni() {
	GOBIN=$1 CGO_ENABLED=0 go install \
		"github.com/containernetworking/plugins/plugins/main/bridge@$2" \
		"github.com/containernetworking/plugins/plugins/main/loopback@$2" \
		"github.com/containernetworking/plugins/plugins/ipam/host-local@$2" \
		"github.com/containernetworking/plugins/plugins/meta/portmap@$2"
}

# kubernetes' own go.mod points its staging modules at ./staging, which a
# module-proxy build cannot follow: a scratch module re-points each of them at
# its published v0.X.Y tag. sample-cli-plugin and sample-controller are not on
# the proxy and nothing we build needs them.
kube_module() {
	local dir=$1 version=$2
	local staging=v0.${version#v1.}
	mkdir -p "$dir"
	(
		cd "$dir"
		local kmod
		kmod=$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
		{
			echo "module e2e.local/kubebuild"
			echo
			echo "go 1.26"
			echo
			echo "require k8s.io/kubernetes $version"
			echo
			echo "replace ("
			sed -n '/^replace (/,/^)/p' "$kmod" | awk '$2 == "=>" && $3 ~ /^\.\/staging/ {print $1}' |
				grep -v -e sample-cli-plugin -e sample-controller |
				while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$staging"; done
			echo ")"
		} >go.mod
		GOFLAGS=-mod=mod go mod download k8s.io/kubernetes
	)
}

# All of Kubernetes in one `go build`: the four commands share most of their
# packages, and one invocation lets the go tool compile one command's
# packages while it links another.
build_kubernetes() {
	local out=$1 version=$2
	local mod="$E2E_CACHE_DIR/.kubebuild-$version"
	[[ -f $mod/go.mod ]] || kube_module "$mod" "$version"
	(cd "$mod" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath \
		-ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${version#v1.}" \
		-o "$out/" k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-apiserver \
		k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-controller-manager)
}

# etcd's server module carries ../ replaces, so it too needs a scratch module.
build_etcd() {
	local out=$1 version=$2 mod
	mod=$(mktemp -d)
	(
		cd "$mod"
		printf 'module e2e.local/etcdbuild\n\ngo 1.26\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$version" >go.mod
		for m in api/v3 client/pkg/v3 client/v3 pkg/v3; do
			printf 'replace go.etcd.io/etcd/%s => go.etcd.io/etcd/%s %s\n' "$m" "$m" "$version" >>go.mod
		done
		GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -o "$out/etcd" go.etcd.io/etcd/server/v3
	)
	local rc=$?
	rm -rf "$mod"
	return $rc
}

# build_all builds Kubernetes in one lane and everything else, one after
# another, in a second: on a cold machine Kubernetes alone takes most of the
# time, and the second lane fills the gaps its downloads and links leave on
# the cores (see BENCHMARKS.md, "Cold CI").
build_all() {
	build_component kubernetes "$KUBERNETES_VERSION" build_kubernetes &
	local kube=$!
	local rc=0
	build_component containerd "$CONTAINERD_VERSION" build_containerd &&
		build_component crictl "$CRICTL_VERSION" build_crictl &&
		build_component cni-plugins "$CNI_PLUGINS_VERSION" build_cni &&
		build_component etcd "$ETCD_VERSION" build_etcd || rc=1
	wait "$kube" || rc=1
	return $rc
}

main() {
	command -v go >/dev/null || { log "go is not on PATH"; exit 1; }
	(($# == 0)) || { log "usage: $0 (no arguments; versions.env pins what it builds)"; exit 2; }
	mkdir -p "$E2E_CACHE_DIR"
	build_all
}

main "$@"
