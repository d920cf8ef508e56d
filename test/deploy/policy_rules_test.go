package deploy_test

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/dra"
)

// basePod is the pod template of the rendered kustomize base: the shipped
// manifest each rule below is broken on.
func basePod(t *testing.T) corev1.PodSpec {
	t.Helper()
	r := kustomize(t, deployments("kustomize", "base"))
	if len(r.DaemonSets) != 1 {
		t.Fatalf("%d DaemonSets, want 1", len(r.DaemonSets))
	}
	return r.DaemonSets[0].Spec.Template.Spec
}

// mountOf returns the container's mount of the volume whose host path is hp.
func mountOf(t *testing.T, spec *corev1.PodSpec, hp string) *corev1.VolumeMount {
	t.Helper()
	for _, v := range spec.Volumes {
		if v.HostPath == nil || v.HostPath.Path != hp {
			continue
		}
		for i, m := range spec.Containers[0].VolumeMounts {
			if m.Name == v.Name {
				return &spec.Containers[0].VolumeMounts[i]
			}
		}
	}
	t.Fatalf("the pod does not mount host path %s", hp)
	return nil
}

// addHostPath mounts host path hp at the same place in the container.
func addHostPath(spec *corev1.PodSpec, name, hp string, readOnly bool, rro *corev1.RecursiveReadOnlyMode) {
	spec.Volumes = append(spec.Volumes, corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: hp}}})
	spec.Containers[0].VolumeMounts = append(spec.Containers[0].VolumeMounts,
		corev1.VolumeMount{Name: name, MountPath: hp, ReadOnly: readOnly, RecursiveReadOnly: rro})
}

// The checker is only as good as what it catches: each case breaks one
// rule on the shipped base and must get exactly one violation that names it.
func TestPolicyCatchesEachViolation(t *testing.T) {
	stock := agentPolicy{Dirs: defaultPluginDirs}
	if v := violations(basePod(t), stock); len(v) != 0 {
		t.Fatalf("the shipped base already breaks the rule: %v", v)
	}
	checkEachViolation(t, basePod, stock, []policyBreak{
		{"a writable host path beyond the two", func(t *testing.T, s *corev1.PodSpec) {
			addHostPath(s, "etc", "/etc", false, nil)
		}, "host path /etc at /etc is writable"},
		{"the parent of an allowed dir, writable", func(t *testing.T, s *corev1.PodSpec) {
			addHostPath(s, "run", "/var/run", false, nil)
		}, "host path /var/run at /var/run is writable"},
		{"the read-only /dev/dri made writable", func(t *testing.T, s *corev1.PodSpec) {
			m := mountOf(t, s, "/dev/dri")
			m.ReadOnly, m.RecursiveReadOnly = false, nil
		}, "host path /dev/dri at /dev/dri is writable"},
		{"a hostPath /sys, readOnly but not recursively (the reported escape)", func(t *testing.T, s *corev1.PodSpec) {
			addHostPath(s, "sysfs", "/sys", true, nil)
		}, "host path /sys at /sys is read-only but not recursively (recursiveReadOnly unset"},
		{"recursiveReadOnly Disabled", func(t *testing.T, s *corev1.PodSpec) {
			mountOf(t, s, "/dev/dri").RecursiveReadOnly = ptr.To(corev1.RecursiveReadOnlyDisabled)
		}, "recursiveReadOnly Disabled, want Enabled"},
		{"recursiveReadOnly IfPossible without a grant", func(t *testing.T, s *corev1.PodSpec) {
			mountOf(t, s, "/dev/dri").RecursiveReadOnly = ptr.To(corev1.RecursiveReadOnlyIfPossible)
		}, "recursiveReadOnly IfPossible, want Enabled"},
		{"Bidirectional mount propagation", func(t *testing.T, s *corev1.PodSpec) {
			mountOf(t, s, "/var/run/cdi").MountPropagation = ptr.To(corev1.MountPropagationBidirectional)
		}, "is Bidirectional"},
		{"an added capability", func(t *testing.T, s *corev1.PodSpec) {
			s.Containers[0].SecurityContext.Capabilities.Add = []corev1.Capability{"DAC_OVERRIDE"}
		}, "capabilities adds [DAC_OVERRIDE]"},
		{"capabilities not all dropped", func(t *testing.T, s *corev1.PodSpec) {
			s.Containers[0].SecurityContext.Capabilities.Drop = []corev1.Capability{"NET_RAW"}
		}, "capabilities must drop ALL"},
		{"privileged", func(t *testing.T, s *corev1.PodSpec) {
			s.Containers[0].SecurityContext.Privileged = ptr.To(true)
		}, "privileged is true"},
		{"allowPrivilegeEscalation unset", func(t *testing.T, s *corev1.PodSpec) {
			s.Containers[0].SecurityContext.AllowPrivilegeEscalation = nil
		}, "allowPrivilegeEscalation must be false"},
		{"allowPrivilegeEscalation true", func(t *testing.T, s *corev1.PodSpec) {
			s.Containers[0].SecurityContext.AllowPrivilegeEscalation = ptr.To(true)
		}, "allowPrivilegeEscalation must be false"},
		{"a writable root filesystem", func(t *testing.T, s *corev1.PodSpec) {
			s.Containers[0].SecurityContext.ReadOnlyRootFilesystem = ptr.To(false)
		}, "readOnlyRootFilesystem must be true"},
		{"an unmasked /proc", func(t *testing.T, s *corev1.PodSpec) {
			s.Containers[0].SecurityContext.ProcMount = ptr.To(corev1.UnmaskedProcMount)
		}, "procMount is Unmasked"},
		{"an unconfined seccomp profile", func(t *testing.T, s *corev1.PodSpec) {
			s.Containers[0].SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
		}, "seccompProfile is &SeccompProfile{Type:Unconfined"},
		{"hostNetwork", func(t *testing.T, s *corev1.PodSpec) { s.HostNetwork = true }, "spec.hostNetwork is true"},
		{"hostPID", func(t *testing.T, s *corev1.PodSpec) { s.HostPID = true }, "spec.hostPID is true"},
		{"hostIPC", func(t *testing.T, s *corev1.PodSpec) { s.HostIPC = true }, "spec.hostIPC is true"},
		{"a hostPort", func(t *testing.T, s *corev1.PodSpec) { s.Containers[0].Ports[0].HostPort = 8081 }, "binds hostPort 8081"},
		{"no liveness probe", func(t *testing.T, s *corev1.PodSpec) { s.Containers[0].LivenessProbe = nil }, "no livenessProbe"},
		{"no readiness probe", func(t *testing.T, s *corev1.PodSpec) { s.Containers[0].ReadinessProbe = nil }, "no readinessProbe"},
		{"readiness on /healthz", func(t *testing.T, s *corev1.PodSpec) {
			s.Containers[0].ReadinessProbe.HTTPGet.Path = "/healthz"
		}, `readinessProbe path "/healthz", want /readyz`},
		{"a probe on another port", func(t *testing.T, s *corev1.PodSpec) {
			s.Containers[0].LivenessProbe.HTTPGet.Port = intstr.FromInt32(9400)
		}, "livenessProbe port 9400, want probes (8081)"},
		{"the probe server off", func(t *testing.T, s *corev1.PodSpec) {
			c := &s.Containers[0]
			for i := range c.Env {
				if c.Env[i].Name == probeEnv {
					c.Env = append(c.Env[:i], c.Env[i+1:]...)
					break
				}
			}
		}, probeEnv + " is not set"},
		{"the probe port not where the plugin listens", func(t *testing.T, s *corev1.PodSpec) {
			s.Containers[0].Ports[0].ContainerPort = 8082
		}, "port probes is 8082 but the plugin listens on 8081"},
		{"the latest tag", func(t *testing.T, s *corev1.PodSpec) {
			s.Containers[0].Image = "ghcr.io/intel-gpu-cdi/intel-gpu-cdi:latest"
		}, "is not pinned"},
		{"no tag", func(t *testing.T, s *corev1.PodSpec) {
			s.Containers[0].Image = "registry.example:5000/intel-gpu-cdi"
		}, "has no tag"},
		{"a branch tag", func(t *testing.T, s *corev1.PodSpec) {
			s.Containers[0].Image = "ghcr.io/intel-gpu-cdi/intel-gpu-cdi:main"
		}, "is not pinned"},
		{"an init container that breaks a rule", func(t *testing.T, s *corev1.PodSpec) {
			ic := *s.Containers[0].DeepCopy()
			ic.Name, ic.LivenessProbe, ic.ReadinessProbe = "init", nil, nil
			ic.SecurityContext.Privileged = ptr.To(true)
			s.InitContainers = append(s.InitContainers, ic)
		}, "container init: securityContext.privileged is true"},
	})
}

// policyBreak breaks one rule on a rendered pod; want is in the one
// violation the checker must report.
type policyBreak struct {
	name   string
	break_ func(t *testing.T, s *corev1.PodSpec)
	want   string
}

// checkEachViolation applies each break to a fresh pod and wants exactly
// one violation of policy that contains its want.
func checkEachViolation(t *testing.T, pod func(*testing.T) corev1.PodSpec, policy agentPolicy, cases []policyBreak) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := pod(t)
			tc.break_(t, &s)
			got := violations(s, policy)
			if len(got) != 1 || !strings.Contains(got[0], tc.want) {
				t.Errorf("violations = %q, want exactly one containing %q", got, tc.want)
			}
		})
	}
}

// A grant widens exactly what it names, for the rendering that declares it.
func TestPolicyGrantsAreExplicitAndNarrow(t *testing.T) {
	const registry = "/var/lib/kubelet/plugins_registry"
	for _, tc := range []struct {
		name   string
		break_ func(s *corev1.PodSpec)
		grants grants
		want   string // "" = allowed
	}{
		{"a writable path with its grant", func(s *corev1.PodSpec) { addHostPath(s, "reg", registry, false, nil) },
			grants{Writable: map[string]string{registry: "DRA: the kubelet finds the driver's registration socket there"}}, ""},
		{"a writable path next to a granted one", func(s *corev1.PodSpec) { addHostPath(s, "plugins", "/var/lib/kubelet/plugins", false, nil) },
			grants{Writable: map[string]string{registry: "DRA"}}, "host path /var/lib/kubelet/plugins at /var/lib/kubelet/plugins is writable"},
		{"the parent of a granted path", func(s *corev1.PodSpec) { addHostPath(s, "kubelet", "/var/lib/kubelet", false, nil) },
			grants{Writable: map[string]string{registry: "DRA"}}, "host path /var/lib/kubelet at /var/lib/kubelet is writable"},
		{"a grant without a reason", func(s *corev1.PodSpec) { addHostPath(s, "reg", registry, false, nil) },
			grants{Writable: map[string]string{registry: ""}}, "is writable"},
		{"hostNetwork with its grant", func(s *corev1.PodSpec) { s.HostNetwork = true },
			grants{HostNetwork: "kernel uevents for GPU health arrive only in the host's network namespace"}, ""},
		{"hostPID with a hostNetwork grant", func(s *corev1.PodSpec) { s.HostPID = true },
			grants{HostNetwork: "uevents"}, "spec.hostPID is true"},
		{"IfPossible with its grant", func(s *corev1.PodSpec) {
			for i := range s.Containers[0].VolumeMounts {
				if s.Containers[0].VolumeMounts[i].ReadOnly {
					s.Containers[0].VolumeMounts[i].RecursiveReadOnly = ptr.To(corev1.RecursiveReadOnlyIfPossible)
				}
			}
		}, grants{RecursiveReadOnlyIfPossible: "runtime predates recursive read-only mounts"}, ""},
		{"unset recursiveReadOnly with an IfPossible grant", func(s *corev1.PodSpec) { addHostPath(s, "sysfs", "/sys", true, nil) },
			grants{RecursiveReadOnlyIfPossible: "old runtime"}, "host path /sys at /sys is read-only but not recursively"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := basePod(t)
			tc.break_(&s)
			got := violations(s, agentPolicy{Dirs: defaultPluginDirs, Grants: tc.grants})
			switch {
			case tc.want == "" && len(got) != 0:
				t.Errorf("violations = %q, want none: the grant allows it", got)
			case tc.want != "" && (len(got) != 1 || !strings.Contains(got[0], tc.want)):
				t.Errorf("violations = %q, want exactly one containing %q", got, tc.want)
			}
		})
	}
}

// draPod is the pod template of the rendered DRA kustomization.
func draPod(t *testing.T) corev1.PodSpec {
	t.Helper()
	r := kustomize(t, deployments("kustomize", "dra"))
	if len(r.DaemonSets) != 1 {
		t.Fatalf("%d DaemonSets, want 1", len(r.DaemonSets))
	}
	return r.DaemonSets[0].Spec.Template.Spec
}

// The DRA driver's grants are its two kubelet directories, and no more:
// not the device plugin's directory, not the rest of the kubelet's.
func TestDRAPolicyGrantsOnlyTheDriversDirs(t *testing.T) {
	policy := draPolicy(defaultDRAPaths)
	if v := violations(draPod(t), policy); len(v) != 0 {
		t.Fatalf("the shipped DRA DaemonSet already breaks the rule: %v", v)
	}
	checkEachViolation(t, draPod, policy, []policyBreak{
		{"the device plugin's dir made writable", func(t *testing.T, s *corev1.PodSpec) {
			m := mountOf(t, s, defaultPluginDirs.KubeletSocketDir)
			m.ReadOnly, m.RecursiveReadOnly = false, nil
		}, "host path /var/lib/kubelet/device-plugins at /var/lib/kubelet/device-plugins is writable; only /var/run/cdi and declared grants may be"},
		{"the device plugin's dir read-only but not recursively", func(t *testing.T, s *corev1.PodSpec) {
			mountOf(t, s, defaultPluginDirs.KubeletSocketDir).RecursiveReadOnly = nil
		}, "host path /var/lib/kubelet/device-plugins at /var/lib/kubelet/device-plugins is read-only but not recursively"},
		{"the kubelet's whole plugins dir instead of the driver's own", func(t *testing.T, s *corev1.PodSpec) {
			for i := range s.Volumes {
				if hp := s.Volumes[i].HostPath; hp != nil && hp.Path == defaultDRAPaths.dataDir() {
					hp.Path = dra.DefaultPluginsDir
				}
			}
		}, "host path /var/lib/kubelet/plugins at /var/lib/kubelet/plugins/gpu.intel.com is writable"},
		{"another driver's dir", func(t *testing.T, s *corev1.PodSpec) {
			addHostPath(s, "other", "/var/lib/kubelet/plugins/other.example.com", false, nil)
		}, "host path /var/lib/kubelet/plugins/other.example.com at /var/lib/kubelet/plugins/other.example.com is writable"},
		{"the kubelet's root", func(t *testing.T, s *corev1.PodSpec) {
			addHostPath(s, "kubelet", "/var/lib/kubelet", false, nil)
		}, "host path /var/lib/kubelet at /var/lib/kubelet is writable"},
	})
}
