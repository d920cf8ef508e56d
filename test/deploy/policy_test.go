package deploy_test

import (
	"fmt"
	"net"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The rule every rendering of the node agent is held to: nothing the
// container can reach may leave host state writable except the two
// directories the plugin must write, no privilege of any kind, the kubelet
// can tell whether it works, and the image is pinned.
//
// A rendering that needs more says so in its grants, one exception at a time
// and with the reason, so that a later overlay (DRA's plugin directories, a
// hostNetwork overlay for kernel uevents) widens only itself.

// pluginDirs are the two host directories the device plugin writes: the
// kubelet's device-plugin dir (its socket; kubelet.sock) and the CDI spec
// dir. An empty one is not writable: the DRA driver writes the spec but only
// looks into the device-plugin dir.
type pluginDirs struct{ KubeletSocketDir, CDISpecDir string }

// defaultPluginDirs are where a stock install keeps them.
var defaultPluginDirs = pluginDirs{
	KubeletSocketDir: "/var/lib/kubelet/device-plugins",
	CDISpecDir:       "/var/run/cdi",
}

// grants are the explicit exceptions of one rendering. Every field holds the
// reason; an empty reason grants nothing.
type grants struct {
	// Writable maps host paths, beyond the plugin's two, that this rendering
	// mounts read-write to why it must (the NFD feature dir when the user
	// enables it; a DRA overlay's plugins_registry and plugins/<driver>).
	Writable map[string]string
	// HostNetwork, HostPID and HostIPC say why the pod shares that host
	// namespace.
	HostNetwork, HostPID, HostIPC string
	// RecursiveReadOnlyIfPossible says why a read-only host path may fall
	// back to a non-recursive mount where the runtime cannot do better.
	RecursiveReadOnlyIfPossible string
}

// agentPolicy is what one rendering of the agent may do.
type agentPolicy struct {
	Dirs   pluginDirs
	Grants grants
}

// probeEnv is the variable that turns the plugin's probe server on.
const probeEnv = "INTEL_GPU_CDI_PROBE_ADDRESS"

// pinnedTag is a version tag (1.2.3, v1.2.3, 1.2.3-rc.1), and imageDigest
// what follows the @ of a reference by digest.
var (
	pinnedTag   = regexp.MustCompile(`^v?[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]+)?$`)
	imageDigest = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
)

// violations returns every way spec breaks the rule under p, each naming the
// field at fault. An empty result means the pod may ship.
func violations(spec corev1.PodSpec, p agentPolicy) []string {
	var out []string
	bad := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }

	for _, ns := range []struct {
		name   string
		shared bool
		reason string
	}{
		{"hostNetwork", spec.HostNetwork, p.Grants.HostNetwork},
		{"hostPID", spec.HostPID, p.Grants.HostPID},
		{"hostIPC", spec.HostIPC, p.Grants.HostIPC},
	} {
		if ns.shared && ns.reason == "" {
			bad("spec.%s is true and this rendering declares no grant for it", ns.name)
		}
	}
	if psc := spec.SecurityContext; psc != nil && psc.SeccompProfile != nil && psc.SeccompProfile.Type == corev1.SeccompProfileTypeUnconfined {
		bad("spec.securityContext.seccompProfile is Unconfined")
	}

	writable := map[string]bool{}
	var dirs []string
	for _, d := range []string{p.Dirs.KubeletSocketDir, p.Dirs.CDISpecDir} {
		if d != "" {
			writable[filepath.Clean(d)] = true
			dirs = append(dirs, d)
		}
	}
	for hp, why := range p.Grants.Writable {
		if why != "" {
			writable[filepath.Clean(hp)] = true
		}
	}
	hostPaths := map[string]string{} // volume name -> host path
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = filepath.Clean(v.HostPath.Path)
		}
	}

	containers := slices.Concat(spec.InitContainers, spec.Containers)
	for _, c := range containers {
		field := "container " + c.Name
		checkImage(field, c.Image, bad)
		checkContainerSecurity(field, spec.SecurityContext, c.SecurityContext, bad)
		for _, m := range c.VolumeMounts {
			hp, ok := hostPaths[m.Name]
			if !ok {
				continue
			}
			mf := fmt.Sprintf("%s: mount of host path %s at %s", field, hp, m.MountPath)
			if m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationBidirectional {
				bad("%s is Bidirectional, which lets the container mount onto the host", mf)
			}
			if !m.ReadOnly {
				if !writable[hp] {
					bad("%s is writable; only %s and declared grants may be", mf, strings.Join(dirs, ", "))
				}
				continue
			}
			switch mode := m.RecursiveReadOnly; {
			case mode != nil && *mode == corev1.RecursiveReadOnlyEnabled:
			case mode != nil && *mode == corev1.RecursiveReadOnlyIfPossible && p.Grants.RecursiveReadOnlyIfPossible != "":
			default:
				got := "unset"
				if mode != nil {
					got = string(*mode)
				}
				bad("%s is read-only but not recursively (recursiveReadOnly %s, want Enabled): its submounts stay writable", mf, got)
			}
		}
		for _, port := range c.Ports {
			if port.HostPort != 0 {
				bad("%s: port %d binds hostPort %d", field, port.ContainerPort, port.HostPort)
			}
		}
	}
	for _, c := range spec.Containers {
		checkProbes("container "+c.Name, c, bad)
	}
	return out
}

// checkImage wants a version tag or a digest: a tag such as latest or main
// moves under a running DaemonSet, and a node that restarts the pod gets
// another build than its neighbours.
func checkImage(field, image string, bad func(string, ...any)) {
	if _, digest, ok := strings.Cut(image, "@"); ok {
		if !imageDigest.MatchString(digest) {
			bad("%s: image %q has a malformed digest", field, image)
		}
		return
	}
	name := path.Base(image)
	_, tag, ok := strings.Cut(name, ":")
	switch {
	case !ok:
		bad("%s: image %q has no tag (the runtime pulls latest)", field, image)
	case !pinnedTag.MatchString(tag):
		bad("%s: image %q is not pinned to a version tag or digest", field, image)
	}
}

// checkContainerSecurity holds one container's security context, with the
// pod's as the fallback the runtime uses, to "no privilege at all".
func checkContainerSecurity(field string, pod *corev1.PodSecurityContext, sc *corev1.SecurityContext, bad func(string, ...any)) {
	if sc == nil {
		bad("%s has no securityContext", field)
		return
	}
	if sc.Privileged != nil && *sc.Privileged {
		bad("%s: securityContext.privileged is true", field)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		bad("%s: securityContext.allowPrivilegeEscalation must be false", field)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		bad("%s: securityContext.readOnlyRootFilesystem must be true", field)
	}
	switch {
	case sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL"):
		bad("%s: securityContext.capabilities must drop ALL", field)
	case len(sc.Capabilities.Add) > 0:
		bad("%s: securityContext.capabilities adds %v", field, sc.Capabilities.Add)
	}
	if sc.ProcMount != nil && *sc.ProcMount != corev1.DefaultProcMount {
		bad("%s: securityContext.procMount is %s", field, *sc.ProcMount)
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil && pod != nil {
		seccomp = pod.SeccompProfile
	}
	if seccomp == nil || seccomp.Type == corev1.SeccompProfileTypeUnconfined {
		bad("%s: seccompProfile is %v, want RuntimeDefault or Localhost", field, seccomp)
	}
}

// checkProbes wants the kubelet to see whether the plugin lives and serves:
// liveness on /healthz and readiness on /readyz, over the named port the
// plugin's probe server listens on.
func checkProbes(field string, c corev1.Container, bad func(string, ...any)) {
	var addr string
	for _, e := range c.Env {
		if e.Name == probeEnv {
			addr = e.Value
		}
	}
	if addr == "" {
		bad("%s: %s is not set, so the plugin serves no probes", field, probeEnv)
		return
	}
	_, portText, err := net.SplitHostPort(addr)
	listen, _ := strconv.Atoi(portText)
	if err != nil || listen == 0 {
		bad("%s: %s=%q is not host:port", field, probeEnv, addr)
		return
	}
	i := slices.IndexFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "probes" })
	switch {
	case i < 0:
		bad("%s: no container port named probes for %s", field, addr)
	case c.Ports[i].ContainerPort != int32(listen):
		bad("%s: port probes is %d but the plugin listens on %d", field, c.Ports[i].ContainerPort, listen)
	}
	for _, probe := range []struct {
		name, path string
		p          *corev1.Probe
	}{
		{"livenessProbe", "/healthz", c.LivenessProbe},
		{"readinessProbe", "/readyz", c.ReadinessProbe},
	} {
		switch {
		case probe.p == nil:
			bad("%s: no %s", field, probe.name)
		case probe.p.HTTPGet == nil:
			bad("%s: %s is not an httpGet", field, probe.name)
		case probe.p.HTTPGet.Path != probe.path:
			bad("%s: %s path %q, want %s", field, probe.name, probe.p.HTTPGet.Path, probe.path)
		case probe.p.HTTPGet.Port != intstr.FromString("probes") && probe.p.HTTPGet.Port != intstr.FromInt32(int32(listen)):
			bad("%s: %s port %s, want probes (%d)", field, probe.name, probe.p.HTTPGet.Port.String(), listen)
		}
	}
}
