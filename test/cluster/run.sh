#!/usr/bin/env bash
# Entry point of the cluster e2e suite (`make e2e-cluster`): a real kubelet and
# containerd 2 with CDI, then a one-node cluster (etcd, API server, scheduler,
# controller manager), driving `intel-gpu-cdi plugin` and `intel-gpu-cdi-dra`
# on a fake node.
#
#   E2E_BINARY=/abs/path/to/intel-gpu-cdi E2E_DRA_BINARY=/abs/path/to/intel-gpu-cdi-dra test/cluster/run.sh
#
# Environment:
#   E2E_BINARY        the intel-gpu-cdi binary under test (required)
#   E2E_DRA_BINARY    the intel-gpu-cdi-dra binary under test (required)
#   E2E_CACHE_DIR     where pinned components are built once and reused
#                     (default /var/cache/intel-gpu-cdi-e2e)
#   E2E_ARTIFACTS_DIR if set, daemon logs are copied there
#   E2E_RESULTS_FILE  if set, timings (JSON) are written there
#   E2E_TEST_RUN      passed to go test -run (default: the whole suite)
#   CI                when set, anything missing fails instead of skipping
#
# Needs root, Go, runc, busybox-static, acl and systemd-tmpfiles (installed
# with apt-get if missing).
# Whatever happens, the rig stops what it started and restores the host; the
# trap below is a second line of defence for a test binary that was killed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export E2E_CACHE_DIR=${E2E_CACHE_DIR:-/var/cache/intel-gpu-cdi-e2e}

now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }
log() { printf '%s e2e-cluster: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "$*"; exit 1; }

[[ $(id -u) == 0 ]] || die "must run as root (mknod, mounts, cgroups, kubelet)"
command -v go >/dev/null || die "go is not on PATH"
[[ -n ${E2E_BINARY:-} ]] || die "set E2E_BINARY to the intel-gpu-cdi binary (make build: bin/intel-gpu-cdi)"
[[ -n ${E2E_DRA_BINARY:-} ]] || die "set E2E_DRA_BINARY to the intel-gpu-cdi-dra binary (make build: bin/intel-gpu-cdi-dra)"

missing=()
command -v runc >/dev/null || missing+=(runc)
if ! command -v busybox >/dev/null || ! file -L "$(command -v busybox)" 2>/dev/null | grep -q 'statically linked'; then
	missing+=(busybox-static)
fi
command -v file >/dev/null || missing+=(file)
command -v ip >/dev/null || missing+=(iproute2)
command -v setfacl >/dev/null || missing+=(acl)
command -v systemd-tmpfiles >/dev/null || missing+=(systemd)
if ((${#missing[@]})); then
	log "installing ${missing[*]}"
	command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null ||
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; } ||
		die "could not install ${missing[*]}"
fi

work=$(mktemp -d /tmp/igc-e2e-run.XXXXXX)

# ---- second line of defence: what the host looked like before ------------
sysctls=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
declare -A sysctl_before
for s in "${sysctls[@]}"; do sysctl_before[$s]=$(sysctl -n "$s" 2>/dev/null || true); done
host_paths=(/var/lib/kubelet /var/lib/kubelet/plugins_registry /var/lib/kubelet/plugins /var/log/containers /var/log/pods /var/lib/cni /var/run/netns /run/containerd /opt/containerd /etc/kubernetes)
declare -A path_before
for p in "${host_paths[@]}"; do [[ -e $p ]] && path_before[$p]=1; done
declare -A cg_before
for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do [[ -d $h/kubepods ]] && cg_before[$h]=1; done
# iptables chains the kubelet creates (for ip and ip6), and its jumps to KUBE-FIREWALL.
ipt_chains=(mangle/KUBE-IPTABLES-HINT mangle/KUBE-KUBELET-CANARY nat/KUBE-KUBELET-CANARY filter/KUBE-KUBELET-CANARY filter/KUBE-FIREWALL)
declare -A ipt_before
for bin in iptables ip6tables; do
	command -v $bin >/dev/null || continue
	for tc in "${ipt_chains[@]}"; do
		$bin -w -t "${tc%%/*}" -S "${tc#*/}" >/dev/null 2>&1 && ipt_before[$bin/$tc]=1
	done
done
declare -A nft_before
if command -v nft >/dev/null; then
	while read -r _ fam name; do nft_before["$fam $name"]=1; done < <(nft list tables 2>/dev/null)
fi
bridge=igce2e0 # rig.BridgeName
bridge_before=0
ip link show "$bridge" >/dev/null 2>&1 && bridge_before=1
declare -A rigdir_before
for d in /tmp/igc-e2e-*; do [[ -d $d && $d != "$work" ]] && rigdir_before[$d]=1; done

restore_host() {
	local rc=$? d pid p h s
	for d in /tmp/igc-e2e-*; do
		[[ -d $d && $d != "$work" && -z ${rigdir_before[$d]:-} ]] || continue
		log "cleaning up after a killed rig: $d"
		for pid in $(grep -l -s -F "$d" /proc/[0-9]*/cmdline | cut -d/ -f3); do
			[[ $pid != "$$" ]] && kill -KILL "$pid" 2>/dev/null || true
		done
		awk -v d="$d" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r |
			while read -r p; do umount -l "$p" 2>/dev/null || true; done
		# Never remove through a mount that is left: one is a bind of
		# /var/lib/kubelet/plugins_registry.
		if awk -v d="$d" '$5 == d || index($5, d "/") == 1 {f=1} END {exit !f}' /proc/self/mountinfo; then
			log "not removing $d: still mounted below it"
			continue
		fi
		rm -rf "$d"
	done
	for s in "${sysctls[@]}"; do
		[[ -n ${sysctl_before[$s]} && $(sysctl -n "$s" 2>/dev/null) != "${sysctl_before[$s]}" ]] &&
			sysctl -q -w "$s=${sysctl_before[$s]}" >/dev/null && log "restored sysctl $s"
	done
	for p in "${host_paths[@]}"; do
		if [[ -z ${path_before[$p]:-} && -e $p ]]; then
			awk -v d="$p" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r |
				while read -r m; do umount -l "$m" 2>/dev/null || true; done
			rm -rf "$p" && log "removed $p"
		fi
	done
	# Container processes that outlived their killed shims sit in the
	# kubelet's cgroups, which did not exist before the run: they are ours.
	for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
		[[ -z ${cg_before[$h]:-} && -d $h/kubepods ]] || continue
		for pid in $(find "$h/kubepods" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u); do
			kill -KILL "$pid" 2>/dev/null || true
		done
	done
	sleep 0.5
	for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
		[[ -z ${cg_before[$h]:-} && -d $h/kubepods ]] || continue
		find "$h/kubepods" -depth -type d -exec rmdir {} + 2>/dev/null || log "could not remove cgroup $h/kubepods"
	done
	for bin in iptables ip6tables; do
		command -v $bin >/dev/null || continue
		if [[ -z ${ipt_before[$bin/filter/KUBE-FIREWALL]:-} ]]; then
			while $bin -w -t filter -D INPUT -j KUBE-FIREWALL 2>/dev/null; do :; done
			while $bin -w -t filter -D OUTPUT -j KUBE-FIREWALL 2>/dev/null; do :; done
		fi
		for tc in "${ipt_chains[@]}"; do
			[[ -z ${ipt_before[$bin/$tc]:-} ]] || continue
			if $bin -w -t "${tc%%/*}" -S "${tc#*/}" >/dev/null 2>&1; then
				$bin -w -t "${tc%%/*}" -F "${tc#*/}" && $bin -w -t "${tc%%/*}" -X "${tc#*/}" && log "removed $bin chain $tc"
			fi
		done
	done
	if [[ $bridge_before == 0 ]] && ip link show "$bridge" >/dev/null 2>&1; then
		ip link delete "$bridge" && log "removed bridge $bridge"
	fi
	# nftables tables the kubelet's chains brought into being, now empty.
	if command -v nft >/dev/null; then
		while read -r _ fam name; do
			[[ -z ${nft_before["$fam $name"]:-} ]] || continue
			nft list table "$fam" "$name" 2>/dev/null | grep -qvE '^[[:space:]]*(table |chain |type |}|#|$)' && continue
			nft delete table "$fam" "$name" && log "removed empty nftables table $fam $name"
		done < <(nft list tables 2>/dev/null)
	fi
	rm -rf "$work"
	exit "$rc"
}
trap restore_host EXIT
trap 'exit 130' INT TERM

# ---- the binaries under test ------------------------------------------------
abs() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }
[[ -x $E2E_BINARY ]] || die "E2E_BINARY=$E2E_BINARY is not an executable"
[[ -x $E2E_DRA_BINARY ]] || die "E2E_DRA_BINARY=$E2E_DRA_BINARY is not an executable"
E2E_BINARY=$(abs "$E2E_BINARY")
E2E_DRA_BINARY=$(abs "$E2E_DRA_BINARY")
export E2E_BINARY E2E_DRA_BINARY

# ---- build or reuse the pinned components ------------------------------------
build_start=$(now_ms)
"$here/build.sh"
build_s=$(secs $(($(now_ms) - build_start)))
log "components ready in ${build_s}s (cache $E2E_CACHE_DIR)"

# ---- run -------------------------------------------------------------------
results=${E2E_RESULTS_FILE:-$work/results.json}
tests='TestCIMeansWhatItMeansInTheProduct|TestKubeletWithCDI|TestNonRootPlugin|TestHostMounts|TestFullCluster|TestDRA'
run_start=$(now_ms)
set +e
(cd "$here" && E2E_RESULTS_FILE=$results go test -tags e2e -count=1 -v -timeout 25m \
	-run "${E2E_TEST_RUN:-$tests}" .)
rc=$?
set -e
run_s=$(secs $(($(now_ms) - run_start)))
log "suite finished in ${run_s}s (exit $rc); build/reuse took ${build_s}s"
[[ -f $results ]] && log "timings: $(tr -d '\n ' <"$results" | cut -c1-300)"
exit "$rc"
