package bench

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// upstream is the Intel GPU device plugin (intel/intel-device-plugins-for-
// kubernetes, cmd/gpu_plugin) as a candidate, for BENCH_UPSTREAM=<its
// binary>. It reads /sys, /dev/dri and /var/lib/kubelet/device-plugins at
// fixed paths, so each run starts it in a mount namespace of its own
// (unshare -m, which execs: the measured process is the plugin) where the
// fake node's sys and dev trees are bound on /sys and /dev and the fake
// kubelet's directory on /var/lib/kubelet/device-plugins, over a tmpfs on
// /var/lib so that nothing is made on the host. Needs root.
func upstream(b *testing.B, bin, resource string) Candidate {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Fatal("BENCH_UPSTREAM: needs root (a mount namespace with the fake node bound on /sys and /dev)")
	}
	if _, err := os.Stat(bin); err != nil {
		b.Fatalf("BENCH_UPSTREAM: %v", err)
	}
	return Candidate{
		Name: "upstream",
		Call: "Allocate",
		Command: func(env *Env) *exec.Cmd {
			// Each tree is bound before the next mount, which would hide
			// one that lies below it.
			for _, dir := range []string{env.Node.Sys, env.Node.Dev, env.Kubelet.Dir()} {
				for _, hidden := range []string{"/sys", "/dev", "/var/lib"} {
					if dir == hidden || strings.HasPrefix(dir, hidden+"/") {
						b.Fatalf("BENCH_UPSTREAM: %s is below %s, which the plugin's namespace covers: set TMPDIR elsewhere", dir, hidden)
					}
				}
			}
			script := strings.Join([]string{
				`set -e`,
				`mount --make-rprivate /`,
				`mount --bind "$1" /sys`,
				`mount --bind "$2" /dev`,
				`mount -t tmpfs -o mode=0755 upstream-var-lib /var/lib`,
				`mkdir -p /var/lib/kubelet/device-plugins`,
				`mount --bind "$3" /var/lib/kubelet/device-plugins`,
				`shift 3`,
				`exec "$@"`,
			}, "\n")
			// The plugin's own defaults: one container per GPU, no
			// monitoring resource, no resource manager.
			return exec.Command("unshare", "--mount", "--", "sh", "-c", script, "upstream",
				env.Node.Sys, env.Node.Dev, env.Kubelet.Dir(), bin, "-v", "0")
		},
		Ready: DevicePluginReady(resource),
	}
}
