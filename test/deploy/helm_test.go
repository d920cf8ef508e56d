package deploy_test

import (
	"slices"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

const releaseNamespace = "kube-system"

// helmTemplate renders the chart as `helm template gpu <chart> -n kube-system
// -f <values>` would, schema validation included.
func helmTemplate(t *testing.T, valuesYAML string) (rendered, error) {
	t.Helper()
	files, err := helmRender(t, valuesYAML)
	if err != nil {
		return rendered{}, err
	}
	var names []string
	for name := range files {
		if strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var stream strings.Builder
	for _, name := range names {
		stream.WriteString("---\n# Source: " + name + "\n" + files[name] + "\n")
	}
	return decodeAll(t, []byte(stream.String())), nil
}

// helmRender renders every template of the chart, NOTES.txt included.
func helmRender(t *testing.T, valuesYAML string) (map[string]string, error) {
	t.Helper()
	chrt, err := loader.Load(deployments("helm", "intel-gpu-cdi"))
	if err != nil {
		t.Fatalf("loading chart: %v", err)
	}
	vals := map[string]any{}
	if err := yaml.Unmarshal([]byte(valuesYAML), &vals); err != nil {
		t.Fatalf("test values: %v", err)
	}
	top, err := chartutil.ToRenderValues(chrt, vals,
		chartutil.ReleaseOptions{Name: "gpu", Namespace: releaseNamespace, IsInstall: true}, nil)
	if err != nil {
		return nil, err
	}
	return engine.Render(chrt, top)
}

// everythingOn sets every optional value, and moves every path, so that each
// template branch renders and each flag reaches the container.
const everythingOn = `
image: {repository: registry.example/intel-gpu-cdi, tag: v9.9.9, pullPolicy: Always}
imagePullSecrets: [{name: regcred}]
logLevel: debug
logFormat: text
vendor: example.com
class: igpu
byPath: none
devRoot: /host/dev
kubeletSocketDir: /var/lib/k0s/kubelet/device-plugins
cdiSpecDir: /etc/cdi
sharedDevNum: 4
allocationPolicy: packed
deviceListStrategy: [cdi-cri, cdi-annotations, device-specs]
enableMonitoring: true
allowIds: ["0x56a0", "0x56a1"]
resyncPeriod: 5m
metrics: {enabled: true, address: "0.0.0.0:9500"}
probes: {port: 9501}
nfdFeaturesDir: /etc/kubernetes/node-feature-discovery/features.d
nfd: {enabled: true}
nonRoot: {enabled: true, runAsUser: 1234, runAsGroup: 5678}
securityContext:
  appArmorProfile: {type: RuntimeDefault}
  seLinuxOptions: {type: example_device_plugin_t}
podSecurityContext: {supplementalGroups: [4321]}
nodeSelector: {kubernetes.io/os: linux}
podAnnotations: {example.com/note: "yes"}
podLabels: {team: gpu}
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        - matchExpressions: [{key: example.com/pool, operator: In, values: [gpu]}]
kubeletPlugin: both
dra:
  image: {repository: registry.example/intel-gpu-cdi-dra, tag: v9.9.9}
  driverName: gpu.example.com
  sharedDevNum: 8
  kubeletRegistrarDir: /var/lib/k0s/kubelet/plugins_registry
  kubeletPluginsDir: /var/lib/k0s/kubelet/plugins
  kubeAPI: {qps: 20, burst: 40}
  deviceClasses: true
  maxUnavailable: 10%
  resources: {requests: {cpu: 20m, memory: 80Mi}, limits: {cpu: 200m, memory: 160Mi}}
`

// helmDRAName is the DRA driver's objects' name for the release "gpu".
const helmDRAName = "gpu-intel-gpu-cdi-dra"

// helmDRA returns the stock DRA expectations for the chart: the account is
// named after the release.
func helmDRA() agentExpectations {
	a := stockDRA()
	a.ServiceAccount = helmDRAName
	return a
}

func TestHelmChart(t *testing.T) {
	t.Run("default values", func(t *testing.T) {
		r, err := helmTemplate(t, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(r.DaemonSets) != 1 || len(r.Rules) != 0 {
			t.Fatalf("%d DaemonSets and %d NodeFeatureRules, want 1 and 0", len(r.DaemonSets), len(r.Rules))
		}
		checkNoDRAObjects(t, r)
		ds := r.daemonSet(t, "intel-gpu-cdi")
		if ds.Namespace != releaseNamespace {
			t.Errorf("namespace %q, want the release's %q", ds.Namespace, releaseNamespace)
		}
		if img := ds.Spec.Template.Spec.Containers[0].Image; !strings.HasSuffix(img, ":0.1.0") {
			t.Errorf("image %q does not default its tag to the appVersion", img)
		}
		want := stockAgent()
		want.Env = map[string]string{
			"INTEL_GPU_CDI_DEVICE_LIST_STRATEGY": "cdi-cri",
			"INTEL_GPU_CDI_SHARED_DEV_NUM":       "1",
			"INTEL_GPU_CDI_ALLOCATION_POLICY":    "none",
			"INTEL_GPU_CDI_ENABLE_MONITORING":    "false",
			"INTEL_GPU_CDI_RESYNC_PERIOD":        "60s",
			"INTEL_GPU_CDI_METRICS_ADDRESS":      "",
			"INTEL_GPU_CDI_ALLOW_IDS":            "",
			"INTEL_GPU_CDI_DENY_IDS":             "",
			"INTEL_GPU_CDI_NFD_FEATURES_DIR":     "",
		}
		checkAgent(t, ds, want)
	})

	t.Run("every optional value on", func(t *testing.T) {
		r, err := helmTemplate(t, everythingOn)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.DaemonSets) != 2 || len(r.Rules) != 1 {
			t.Fatalf("%d DaemonSets and %d NodeFeatureRules, want 2 and 1", len(r.DaemonSets), len(r.Rules))
		}
		k0s := pluginDirs{KubeletSocketDir: "/var/lib/k0s/kubelet/device-plugins", CDISpecDir: "/etc/cdi"}
		nodeSelector := map[string]string{nfdLabel: "true", "kubernetes.io/os": "linux"}
		ds := r.daemonSet(t, "intel-gpu-cdi")
		checkAgent(t, ds, agentExpectations{
			Program: devicePlugin,
			Mounts: []hostMount{
				{HostPath: "/dev/dri", ReadOnly: true, Env: envDevRoot, Suffix: "/dri"},
				{HostPath: k0s.KubeletSocketDir, Env: envKubeletSocketDir},
				{HostPath: k0s.CDISpecDir, Env: envCDISpecDir},
				{HostPath: "/etc/kubernetes/node-feature-discovery/features.d", Env: "INTEL_GPU_CDI_NFD_FEATURES_DIR"},
				registryBesideMount("/var/lib/k0s/kubelet/plugins_registry"),
			},
			Policy: agentPolicy{
				Dirs: k0s,
				Grants: grants{Writable: map[string]string{
					"/etc/kubernetes/node-feature-discovery/features.d": "nfdFeaturesDir is set: the plugin keeps its NFD feature file there",
				}},
			},
			User:        1234,
			Group:       5678,
			ProbePort:   9501,
			SELinuxType: "example_device_plugin_t",
			Env: map[string]string{
				"INTEL_GPU_CDI_LOG_LEVEL":            "debug",
				"INTEL_GPU_CDI_LOG_FORMAT":           "text",
				"INTEL_GPU_CDI_VENDOR":               "example.com",
				"INTEL_GPU_CDI_CLASS":                "igpu",
				"INTEL_GPU_CDI_BY_PATH":              "none",
				"INTEL_GPU_CDI_SHARED_DEV_NUM":       "4",
				"INTEL_GPU_CDI_ALLOCATION_POLICY":    "packed",
				"INTEL_GPU_CDI_DEVICE_LIST_STRATEGY": "cdi-cri,cdi-annotations,device-specs",
				"INTEL_GPU_CDI_ENABLE_MONITORING":    "true",
				"INTEL_GPU_CDI_ALLOW_IDS":            "0x56a0,0x56a1",
				"INTEL_GPU_CDI_DENY_IDS":             "",
				"INTEL_GPU_CDI_RESYNC_PERIOD":        "5m",
				"INTEL_GPU_CDI_METRICS_ADDRESS":      "0.0.0.0:9500",
			},
			NodeSelector: nodeSelector,
			MetricsPort:  9500,
		})
		checkRule(t, r.Rules[0], nfdLabel)

		k0sDRA := draPaths{Registrar: "/var/lib/k0s/kubelet/plugins_registry", PluginsDir: "/var/lib/k0s/kubelet/plugins", Driver: "gpu.example.com", Dirs: k0s}
		draDS := r.daemonSet(t, "intel-gpu-cdi-dra")
		checkAgent(t, draDS, agentExpectations{
			Program: draDriver,
			Mounts:  draMounts(k0sDRA),
			Policy:  draPolicy(k0sDRA),
			// nonRoot is the device plugin's: the driver stays root without
			// capabilities.
			User:           0,
			Group:          0,
			ProbePort:      9501,
			SELinuxType:    "example_device_plugin_t",
			ServiceAccount: helmDRAName,
			Env: map[string]string{
				"INTEL_GPU_CDI_LOG_LEVEL":       "debug",
				"INTEL_GPU_CDI_VENDOR":          "example.com",
				"INTEL_GPU_CDI_DRIVER_NAME":     "gpu.example.com",
				"INTEL_GPU_CDI_SHARED_DEV_NUM":  "8",
				"INTEL_GPU_CDI_KUBE_API_QPS":    "20",
				"INTEL_GPU_CDI_KUBE_API_BURST":  "40",
				"INTEL_GPU_CDI_ALLOW_IDS":       "0x56a0,0x56a1",
				"INTEL_GPU_CDI_METRICS_ADDRESS": "0.0.0.0:9500",
			},
			NodeSelector: nodeSelector,
			MetricsPort:  9500,
		})
		checkDRAObjects(t, r, draDS, "gpu.example.com", true)
		if img := draDS.Spec.Template.Spec.Containers[0].Image; img != "registry.example/intel-gpu-cdi-dra:v9.9.9" {
			t.Errorf("DRA image %q, want dra.image", img)
		}
		if mu := draDS.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable; mu == nil || mu.String() != "10%" {
			t.Errorf("DRA maxUnavailable %v, want dra.maxUnavailable 10%%", mu)
		}
		if got := draDS.Spec.Template.Spec.Containers[0].Resources.Limits.Memory().String(); got != "160Mi" {
			t.Errorf("DRA memory limit %s, want dra.resources' 160Mi", got)
		}

		t.Run("every flag has a value in the chart", func(t *testing.T) {
			for _, d := range []struct {
				ds *appsv1.DaemonSet
				p  program
				// not set: --verbose is --log-level debug by another name;
				// --deny-ids is the other half of allowIds (rendered alone
				// below); the driver's --kubeconfig stays empty in a pod,
				// which uses its service account.
				unset []string
			}{
				{ds, devicePlugin, []string{"INTEL_GPU_CDI_VERBOSE", "INTEL_GPU_CDI_DENY_IDS"}},
				{draDS, draDriver, []string{"INTEL_GPU_CDI_VERBOSE", "INTEL_GPU_CDI_DENY_IDS", "INTEL_GPU_CDI_KUBECONFIG"}},
			} {
				set := map[string]bool{}
				for _, e := range d.ds.Spec.Template.Spec.Containers[0].Env {
					set[e.Name] = true
				}
				for e := range cliEnv(t, d.p) {
					if !set[e] && !slices.Contains(d.unset, e) {
						t.Errorf("%s reads %s but no chart value sets it", d.p, e)
					}
				}
			}
		})
	})

	t.Run("kubeletPlugin dra: the DRA driver alone", func(t *testing.T) {
		r, err := helmTemplate(t, `kubeletPlugin: dra`)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.DaemonSets) != 1 {
			t.Fatalf("%d DaemonSets, want only the DRA driver's", len(r.DaemonSets))
		}
		ds := r.daemonSet(t, "intel-gpu-cdi-dra")
		if img := ds.Spec.Template.Spec.Containers[0].Image; img != "ghcr.io/intel-gpu-cdi/intel-gpu-cdi-dra:0.1.0" {
			t.Errorf("image %q, want the DRA image at the appVersion", img)
		}
		want := helmDRA()
		want.Env = map[string]string{
			"INTEL_GPU_CDI_DRIVER_NAME":       "gpu.intel.com",
			"INTEL_GPU_CDI_SHARED_DEV_NUM":    "1",
			"INTEL_GPU_CDI_KUBE_API_QPS":      "50",
			"INTEL_GPU_CDI_KUBE_API_BURST":    "100",
			"INTEL_GPU_CDI_HEALTH_STATE_FILE": "/var/lib/kubelet/plugins/gpu.intel.com/health.json",
		}
		checkAgent(t, ds, want)
		checkDRAObjects(t, r, ds, "gpu.intel.com", true)
	})

	t.Run("kubeletPlugin both: each on its nodes", func(t *testing.T) {
		r, err := helmTemplate(t, `kubeletPlugin: both`)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.DaemonSets) != 2 {
			t.Fatalf("%d DaemonSets, want 2", len(r.DaemonSets))
		}
		checkAgent(t, r.daemonSet(t, "intel-gpu-cdi"), stockAgent())
		ds := r.daemonSet(t, "intel-gpu-cdi-dra")
		checkAgent(t, ds, helmDRA())
		checkDRAObjects(t, r, ds, "gpu.intel.com", true)
	})

	t.Run("kubeletPlugin dra without DeviceClasses", func(t *testing.T) {
		r, err := helmTemplate(t, "kubeletPlugin: dra\ndra: {deviceClasses: false}")
		if err != nil {
			t.Fatal(err)
		}
		checkDRAObjects(t, r, r.daemonSet(t, "intel-gpu-cdi-dra"), "gpu.intel.com", false)
	})

	t.Run("non-root", func(t *testing.T) {
		r, err := helmTemplate(t, `nonRoot: {enabled: true}`)
		if err != nil {
			t.Fatal(err)
		}
		want := stockAgent()
		want.User, want.Group = nonRootID, nonRootID
		checkAgent(t, r.daemonSet(t, "intel-gpu-cdi"), want)
	})

	t.Run("recursiveReadOnly IfPossible, for runtimes without recursive read-only mounts", func(t *testing.T) {
		r, err := helmTemplate(t, "recursiveReadOnly: IfPossible\nkubeletPlugin: both")
		if err != nil {
			t.Fatal(err)
		}
		const why = "the user chose IfPossible: /dev/dri and the kubelet's directories have no submounts on a stock node, and the cluster or runtime predates recursive read-only mounts"
		for _, want := range []agentExpectations{stockAgent(), helmDRA()} {
			ds := r.daemonSet(t, map[program]string{devicePlugin: "intel-gpu-cdi", draDriver: "intel-gpu-cdi-dra"}[want.Program])
			for _, m := range ds.Spec.Template.Spec.Containers[0].VolumeMounts {
				if m.ReadOnly && (m.RecursiveReadOnly == nil || *m.RecursiveReadOnly != corev1.RecursiveReadOnlyIfPossible) {
					t.Errorf("%s mount %s: recursiveReadOnly %v, want IfPossible", ds.Name, m.Name, ptrText(m.RecursiveReadOnly))
				}
			}
			want.Policy.Grants.RecursiveReadOnlyIfPossible = why
			checkAgent(t, ds, want)
		}
	})

	t.Run("the runtime's SELinux type and an image digest", func(t *testing.T) {
		const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
		r, err := helmTemplate(t, "securityContext: {seLinuxOptions: null}\nimage: {tag: \""+digest+"\"}")
		if err != nil {
			t.Fatal(err)
		}
		ds := r.daemonSet(t, "intel-gpu-cdi")
		if img := ds.Spec.Template.Spec.Containers[0].Image; img != "ghcr.io/intel-gpu-cdi/intel-gpu-cdi@"+digest {
			t.Errorf("image %q, want the repository @%s", img, digest)
		}
		want := stockAgent()
		want.SELinuxType = ""
		checkAgent(t, ds, want)
	})

	t.Run("denyIds alone", func(t *testing.T) {
		r, err := helmTemplate(t, "denyIds: [\"0x0bd5\"]\nkubeletPlugin: both")
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range []struct {
			name string
			p    program
		}{{"intel-gpu-cdi", devicePlugin}, {"intel-gpu-cdi-dra", draDriver}} {
			env := containerEnv(t, r.daemonSet(t, d.name).Spec.Template.Spec.Containers[0])
			if env["INTEL_GPU_CDI_DENY_IDS"] != "0x0bd5" {
				t.Errorf("%s: INTEL_GPU_CDI_DENY_IDS = %q", d.p, env["INTEL_GPU_CDI_DENY_IDS"])
			}
			checkEnvAgainstCLI(t, d.p, env)
		}
	})
}

// The notes after an install say where each kubelet plugin runs, and how a
// node is moved to the DRA driver.
func TestHelmNotesNameTheLabel(t *testing.T) {
	for _, tc := range []struct {
		kubeletPlugin string
		want, not     []string
	}{
		{"deviceplugin", []string{"not labelled\ngpu.intel.com/kubelet-plugin=dra"}, []string{"intel-gpu-cdi-dra"}},
		{"both", []string{"not labelled\ngpu.intel.com/kubelet-plugin=dra", "kubectl label node <node> gpu.intel.com/kubelet-plugin=dra"}, nil},
		{"dra", []string{"kubectl label node <node> gpu.intel.com/kubelet-plugin=dra", "runs nothing on other nodes"}, []string{"allocatable.gpu"}},
	} {
		t.Run(tc.kubeletPlugin, func(t *testing.T) {
			files, err := helmRender(t, "kubeletPlugin: "+tc.kubeletPlugin)
			if err != nil {
				t.Fatal(err)
			}
			notes := files["intel-gpu-cdi/templates/NOTES.txt"]
			for _, w := range tc.want {
				if !strings.Contains(notes, w) {
					t.Errorf("NOTES.txt lacks %q:\n%s", w, notes)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(notes, n) {
					t.Errorf("NOTES.txt mentions %q:\n%s", n, notes)
				}
			}
		})
	}
}

func TestHelmChartRefusesBadValues(t *testing.T) {
	for _, tc := range []struct{ name, values, wantErr string }{
		{"allowIds with denyIds", `{allowIds: ["0x56a0"], denyIds: ["0x56a1"]}`, "mutually exclusive"},
		{"an unknown allocation policy", `allocationPolicy: random`, "allocationPolicy"},
		{"an unknown device list strategy", `deviceListStrategy: [envvar]`, "deviceListStrategy"},
		{"no device list strategy", `deviceListStrategy: []`, "deviceListStrategy"},
		{"zero sharing", `sharedDevNum: 0`, "sharedDevNum"},
		{"a PCI ID without 0x", `allowIds: ["56a0"]`, "allowIds"},
		{"an unknown log format", `logFormat: xml`, "logFormat"},
		{"an unknown by-path mode", `byPath: all`, "byPath"},
		{"a relative CDI dir", `cdiSpecDir: var/run/cdi`, "cdiSpecDir"},
		{"a resync period that is not a duration", `resyncPeriod: "60"`, "resyncPeriod"},
		{"the removed sysfsRoot", `sysfsRoot: /host/sys`, "sysfsRoot is no longer a value"},
		{"the latest tag", `image: {tag: latest}`, "/image/tag"},
		{"a privileged container", `securityContext: {privileged: true}`, "/securityContext"},
		{"an added capability", `securityContext: {capabilities: {add: [SYS_ADMIN]}}`, "/securityContext"},
		{"privilege escalation", `securityContext: {allowPrivilegeEscalation: true}`, "/securityContext"},
		{"root through securityContext", `securityContext: {runAsUser: 0}`, "/securityContext"},
		{"an unconfined seccomp profile", `podSecurityContext: {seccompProfile: {type: Unconfined}}`, "/podSecurityContext/seccompProfile/type"},
		{"a non-root user 0", `nonRoot: {enabled: true, runAsUser: 0, runAsGroup: 65532}`, "/nonRoot/runAsUser"},
		{"non-recursive read-only mounts", `recursiveReadOnly: Disabled`, "/recursiveReadOnly"},
		{"metrics on the probe port", `metrics: {enabled: true, address: ":8081"}`, "both use port 8081"},
		{"an unknown kubelet plugin", `kubeletPlugin: all`, "/kubeletPlugin"},
		{"the DRA driver's latest tag", `dra: {image: {tag: latest}}`, "/dra/image/tag"},
		{"a driver name that is no DNS subdomain", `dra: {driverName: GPU_Intel}`, "/dra/driverName"},
		{"zero DRA shares", `dra: {sharedDevNum: 0}`, "/dra/sharedDevNum"},
		{"a relative plugins dir", `dra: {kubeletPluginsDir: var/lib/kubelet/plugins}`, "/dra/kubeletPluginsDir"},
		{"no API requests per second", `dra: {kubeAPI: {qps: 0, burst: 1}}`, "/dra/kubeAPI/qps"},
		{"a DRA update that stops no node", `dra: {maxUnavailable: 0}`, "/dra/maxUnavailable"},
		{"a DRA update that surges", `dra: {maxSurge: 1}`, "maxSurge"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := helmTemplate(t, tc.values)
			if err == nil {
				t.Fatalf("rendered; want an error mentioning %q", tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not mention %q", err, tc.wantErr)
			}
		})
	}
}

func TestHelmLint(t *testing.T) {
	for name, values := range map[string]string{"default values": "", "every optional value on": everythingOn} {
		t.Run(name, func(t *testing.T) {
			vals := map[string]any{}
			if err := yaml.Unmarshal([]byte(values), &vals); err != nil {
				t.Fatal(err)
			}
			l := lint.All(deployments("helm", "intel-gpu-cdi"), vals, releaseNamespace, false)
			for _, m := range l.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("helm lint: %s", m)
				} else {
					t.Logf("helm lint: %s", m)
				}
			}
		})
	}
}
