package deploy_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	resourcev1 "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/conflict"
)

// nodeFeatureRule is the part of NFD's nfd.k8s-sigs.io/v1alpha1
// NodeFeatureRule that we write. Decoding is strict, so a field we do not
// model (or a typo) fails the test.
type nodeFeatureRule struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		Rules []nfdRule `json:"rules"`
	} `json:"spec"`
}

type nfdRule struct {
	Name          string            `json:"name"`
	Labels        map[string]string `json:"labels,omitempty"`
	MatchFeatures []nfdFeature      `json:"matchFeatures"`
}

type nfdFeature struct {
	Feature          string                   `json:"feature"`
	MatchExpressions map[string]nfdExpression `json:"matchExpressions"`
}

type nfdExpression struct {
	Op    string   `json:"op"`
	Value []string `json:"value,omitempty"`
}

// rendered holds the objects of one rendering, by kind.
type rendered struct {
	DaemonSets []*appsv1.DaemonSet
	Rules      []*nodeFeatureRule
	// The DRA driver's: its account and RBAC, the admission policy, the
	// DeviceClasses.
	ServiceAccounts     []*corev1.ServiceAccount
	ClusterRoles        []*rbacv1.ClusterRole
	ClusterRoleBindings []*rbacv1.ClusterRoleBinding
	Policies            []*admissionv1.ValidatingAdmissionPolicy
	PolicyBindings      []*admissionv1.ValidatingAdmissionPolicyBinding
	DeviceClasses       []*resourcev1.DeviceClass
}

// daemonSet returns the rendered DaemonSet whose name ends with suffix
// (Helm prefixes the release name), or fails.
func (r rendered) daemonSet(t *testing.T, suffix string) *appsv1.DaemonSet {
	t.Helper()
	for _, ds := range r.DaemonSets {
		if strings.HasSuffix(ds.Name, suffix) {
			return ds
		}
	}
	t.Fatalf("no DaemonSet named *%s among %d", suffix, len(r.DaemonSets))
	return nil
}

// strictInto decodes doc into a new T, failing on any field T lacks.
func strictInto[T any](t *testing.T, kind string, doc []byte) *T {
	t.Helper()
	obj := new(T)
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		t.Fatalf("%s does not decode strictly: %v\n%s", kind, err, doc)
	}
	return obj
}

// decodeAll splits a multi-document YAML stream and strictly decodes every
// object into its API type. Kinds we do not ship fail the test.
func decodeAll(t *testing.T, stream []byte) rendered {
	t.Helper()
	var out rendered
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("splitting YAML: %v", err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatalf("reading kind: %v\n%s", err, doc)
		}
		if tm.Kind == "" && tm.APIVersion == "" {
			// A document of nothing but comments (a template that rendered empty).
			var m map[string]any
			if err := yaml.Unmarshal(doc, &m); err == nil && len(m) == 0 {
				continue
			}
		}
		switch kind := tm.APIVersion + " " + tm.Kind; kind {
		case "apps/v1 DaemonSet":
			out.DaemonSets = append(out.DaemonSets, strictInto[appsv1.DaemonSet](t, kind, doc))
		case "nfd.k8s-sigs.io/v1alpha1 NodeFeatureRule":
			out.Rules = append(out.Rules, strictInto[nodeFeatureRule](t, kind, doc))
		case "v1 ServiceAccount":
			out.ServiceAccounts = append(out.ServiceAccounts, strictInto[corev1.ServiceAccount](t, kind, doc))
		case "rbac.authorization.k8s.io/v1 ClusterRole":
			out.ClusterRoles = append(out.ClusterRoles, strictInto[rbacv1.ClusterRole](t, kind, doc))
		case "rbac.authorization.k8s.io/v1 ClusterRoleBinding":
			out.ClusterRoleBindings = append(out.ClusterRoleBindings, strictInto[rbacv1.ClusterRoleBinding](t, kind, doc))
		case "admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy":
			out.Policies = append(out.Policies, strictInto[admissionv1.ValidatingAdmissionPolicy](t, kind, doc))
		case "admissionregistration.k8s.io/v1 ValidatingAdmissionPolicyBinding":
			out.PolicyBindings = append(out.PolicyBindings, strictInto[admissionv1.ValidatingAdmissionPolicyBinding](t, kind, doc))
		case "resource.k8s.io/v1 DeviceClass":
			out.DeviceClasses = append(out.DeviceClasses, strictInto[resourcev1.DeviceClass](t, kind, doc))
		default:
			t.Fatalf("unexpected object %s %s:\n%s", tm.APIVersion, tm.Kind, doc)
		}
	}
	return out
}

// program is the binary a DaemonSet runs.
type program int

const (
	// devicePlugin is `intel-gpu-cdi plugin`.
	devicePlugin program = iota
	// draDriver is intel-gpu-cdi-dra, the image's entrypoint with no args.
	draDriver
)

func (p program) String() string {
	if p == draDriver {
		return "intel-gpu-cdi-dra"
	}
	return "intel-gpu-cdi plugin"
}

// hostMount is what a DaemonSet must mount from the host.
type hostMount struct {
	HostPath string
	ReadOnly bool
	// Env names the flag that must point at the mount (through the
	// container's env, or the flag's default), and Suffix what the binary
	// adds to the flag's value ("/dri" for --dev-root).
	Env, Suffix string
	// Where, when set, says instead where the binary looks, from the values
	// of its flags (flag returns a variable's value in the container, or
	// its flag's default).
	Where func(flag func(env string) string) string
}

// agentExpectations is what every rendering of the node agent must satisfy.
type agentExpectations struct {
	// Program is what the container runs.
	Program program
	// Mounts are exactly the host paths the pod mounts.
	Mounts []hostMount
	// Policy is the security rule, with this rendering's grants.
	Policy agentPolicy
	// User is the UID and GID the container runs as; 0 is root, which must
	// be explicit too.
	User, Group int64
	// Env holds exact values some variables must have ("" = must be absent).
	Env map[string]string
	// NodeSelector entries the pod must carry.
	NodeSelector map[string]string
	// MetricsPort is the container port that must be exposed, 0 for none.
	MetricsPort int32
	// ProbePort is the port of the plugin's probe server.
	ProbePort int32
	// SELinuxType is the container's SELinux type, "" for the runtime's.
	SELinuxType string
	// ServiceAccount is the account whose token the pod mounts; "" for
	// none (the device plugin never calls the API server).
	ServiceAccount string
}

// The defaults of a stock install.
const (
	defaultProbePort   = 8081
	defaultSELinuxType = "container_device_plugin_t"
	// nonRootID is the UID and GID of the non-root overlay and Helm value,
	// and the group the node preparation files grant access to.
	nonRootID = 65532
	// The environment variables of settings that decide host paths.
	envDevRoot          = "INTEL_GPU_CDI_DEV_ROOT"
	envKubeletSocketDir = "INTEL_GPU_CDI_KUBELET_SOCKET_DIR"
	envCDISpecDir       = "INTEL_GPU_CDI_CDI_SPEC_DIR"
	envHealthStateFile  = "INTEL_GPU_CDI_HEALTH_STATE_FILE"
	envNodeName         = "INTEL_GPU_CDI_NODE_NAME"
)

// defaultMounts are the host paths of a stock install of the device
// plugin: the GPU nodes to look at, the plugin's two directories, and the
// kubelet's plugins_registry beside the first, to see whether a DRA driver
// serves the node. Not /sys: the runtime gives the container its own
// read-only sysfs, which shows the host's PCI and DRM.
func defaultMounts() []hostMount {
	return []hostMount{
		{HostPath: "/dev/dri", ReadOnly: true, Env: envDevRoot, Suffix: "/dri"},
		{HostPath: defaultPluginDirs.KubeletSocketDir, Env: envKubeletSocketDir},
		{HostPath: defaultPluginDirs.CDISpecDir, Env: envCDISpecDir},
		registryBesideMount("/var/lib/kubelet/plugins_registry"),
	}
}

// registryBesideMount is the device plugin's read-only view of the
// plugins_registry at hostPath, which the plugin finds beside its
// --kubelet-socket-dir.
func registryBesideMount(hostPath string) hostMount {
	return hostMount{HostPath: hostPath, ReadOnly: true, Where: func(flag func(string) string) string {
		return conflict.RegistryBeside(flag(envKubeletSocketDir))
	}}
}

// stockAgent returns the expectations every rendering of the device plugin
// starts from.
func stockAgent() agentExpectations {
	return agentExpectations{
		Program:     devicePlugin,
		Mounts:      defaultMounts(),
		Policy:      agentPolicy{Dirs: defaultPluginDirs},
		ProbePort:   defaultProbePort,
		SELinuxType: defaultSELinuxType,
	}
}

// containerEnv returns the container's env as a map. valueFrom is refused
// (every setting is a literal flag value) except the DRA driver's node
// name, which only the downward API knows.
func containerEnv(t *testing.T, c corev1.Container) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
		case e.Name == envNodeName && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName":
			// Stands for the node's name: a value the flag accepts.
			e.Value = "gpu-node-1"
		default:
			t.Errorf("env %s uses valueFrom; the agent's settings are literal flag values (only %s comes from spec.nodeName)", e.Name, envNodeName)
		}
		if _, dup := m[e.Name]; dup {
			t.Errorf("env %s is set twice", e.Name)
		}
		m[e.Name] = e.Value
	}
	if len(c.EnvFrom) > 0 {
		t.Errorf("envFrom hides which variables are set; list them in env")
	}
	return m
}

// checkAgent holds one rendered DaemonSet to the rules of the node agent.
func checkAgent(t *testing.T, ds *appsv1.DaemonSet, want agentExpectations) {
	t.Helper()
	spec := ds.Spec.Template.Spec

	t.Run("the selector matches the pod template", func(t *testing.T) {
		sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
		if err != nil || sel.Empty() {
			t.Fatalf("selector %v: %v (empty: %v)", ds.Spec.Selector, err, sel == nil || sel.Empty())
		}
		if !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
			t.Errorf("selector %v does not match template labels %v", ds.Spec.Selector, ds.Spec.Template.Labels)
		}
	})

	t.Run("the pod gets only what it needs", func(t *testing.T) {
		for _, v := range violations(spec, want.Policy) {
			t.Error(v)
		}
	})

	t.Run("the pod is node-critical", func(t *testing.T) {
		if spec.PriorityClassName != "system-node-critical" {
			t.Errorf("priorityClassName = %q, want system-node-critical", spec.PriorityClassName)
		}
		if len(spec.Tolerations) == 0 {
			t.Errorf("no tolerations: the agent would miss tainted GPU nodes")
		}
		for k, v := range want.NodeSelector {
			if spec.NodeSelector[k] != v {
				t.Errorf("nodeSelector[%q] = %q, want %q (all: %v)", k, spec.NodeSelector[k], v, spec.NodeSelector)
			}
		}
		if len(want.NodeSelector) == 0 && len(spec.NodeSelector) > 0 {
			t.Errorf("nodeSelector %v set where none was asked for", spec.NodeSelector)
		}
	})

	t.Run("the pod has a service-account token only where it calls the API server", func(t *testing.T) {
		mounted := spec.AutomountServiceAccountToken
		switch {
		case want.ServiceAccount == "" && (mounted == nil || *mounted):
			t.Errorf("automountServiceAccountToken must be false: %s never calls the API server", want.Program)
		case want.ServiceAccount != "" && (mounted == nil || !*mounted):
			t.Errorf("automountServiceAccountToken = %v, want true: %s publishes ResourceSlices", ptrText(mounted), want.Program)
		case spec.ServiceAccountName != want.ServiceAccount:
			t.Errorf("serviceAccountName = %q, want %q", spec.ServiceAccountName, want.ServiceAccount)
		}
	})

	t.Run("the pod runs on the nodes whose label chooses it", func(t *testing.T) {
		for _, value := range kubeletPluginLabelValues {
			node := labelledNode(value, satisfyingLabels(spec))
			if got, expect := runsOn(t, spec, node), servesLabel(want.Program, value); got != expect {
				t.Errorf("%s runs on a node labelled %s: %v, want %v", want.Program, labelText(value), got, expect)
			}
		}
	})

	if want.Program == draDriver {
		t.Run("an update never runs two drivers on a node", func(t *testing.T) {
			u := ds.Spec.UpdateStrategy
			if u.Type != appsv1.RollingUpdateDaemonSetStrategyType || u.RollingUpdate == nil || u.RollingUpdate.MaxSurge == nil {
				t.Fatalf("updateStrategy %+v: want RollingUpdate with maxSurge 0 set", u)
			}
			if surge := u.RollingUpdate.MaxSurge; surge.IntValue() != 0 || surge.String() != "0" {
				t.Errorf("maxSurge = %s, want 0", surge.String())
			}
		})
	}

	if len(spec.InitContainers) > 0 || len(spec.EphemeralContainers) > 0 {
		t.Errorf("unexpected init or ephemeral containers")
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("want exactly one container, got %d", len(spec.Containers))
	}
	c := spec.Containers[0]
	env := containerEnv(t, c)
	flag := func(name string) string {
		if v, ok := env[name]; ok {
			return v
		}
		return cliDefault(t, want.Program, name)
	}

	t.Run("the container runs the image's entrypoint with the right args", func(t *testing.T) {
		if len(c.Command) != 0 {
			t.Errorf("command %v overrides the image entrypoint", c.Command)
		}
		switch want.Program {
		case devicePlugin:
			if len(c.Args) == 0 || c.Args[0] != "plugin" {
				t.Errorf("args = %v, want [plugin ...]", c.Args)
			}
		case draDriver:
			// The driver is the entrypoint; any argument would be taken as a
			// subcommand.
			if len(c.Args) != 0 {
				t.Errorf("args = %v, want none", c.Args)
			}
			if _, ok := env[envNodeName]; !ok {
				t.Errorf("%s is not set: the driver cannot name its pool", envNodeName)
			}
		}
	})

	t.Run("the container runs as the user it says, and in its SELinux domain", func(t *testing.T) {
		sc := c.SecurityContext
		if sc == nil {
			t.Fatal("no container securityContext")
		}
		// Root is deliberate where it is used (see the manifest): explicit,
		// never implied by whatever user the image happens to have.
		if sc.RunAsUser == nil || *sc.RunAsUser != want.User {
			t.Errorf("runAsUser = %v, want %d set explicitly", ptrText(sc.RunAsUser), want.User)
		}
		if sc.RunAsGroup == nil || *sc.RunAsGroup != want.Group {
			t.Errorf("runAsGroup = %v, want %d set explicitly", ptrText(sc.RunAsGroup), want.Group)
		}
		nonRoot := want.User != 0
		if sc.RunAsNonRoot == nil || *sc.RunAsNonRoot != nonRoot {
			t.Errorf("runAsNonRoot = %v, want %v set explicitly", ptrText(sc.RunAsNonRoot), nonRoot)
		}
		got := ""
		if sc.SELinuxOptions != nil {
			got = sc.SELinuxOptions.Type
		}
		if got != want.SELinuxType {
			t.Errorf("seLinuxOptions.type = %q, want %q", got, want.SELinuxType)
		}
	})

	t.Run("requests and limits are set and consistent", func(t *testing.T) {
		for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, okReq := c.Resources.Requests[name]
			lim, okLim := c.Resources.Limits[name]
			if !okReq || !okLim {
				t.Errorf("%s: request set %v, limit set %v; want both", name, okReq, okLim)
				continue
			}
			if req.Cmp(lim) > 0 {
				t.Errorf("%s: request %s above limit %s", name, req.String(), lim.String())
			}
			if req.Cmp(resource.Quantity{}) <= 0 {
				t.Errorf("%s: request %s is not positive", name, req.String())
			}
		}
	})

	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	t.Run("the host paths are exactly those the plugin uses, mounted where it is told", func(t *testing.T) {
		mounts := map[string]corev1.VolumeMount{} // by host path
		for _, m := range c.VolumeMounts {
			v, ok := volumes[m.Name]
			if !ok {
				t.Errorf("mount %q names no volume", m.Name)
				continue
			}
			if v.HostPath == nil {
				t.Errorf("volume %q is not a hostPath", m.Name)
				continue
			}
			if m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationBidirectional {
				t.Errorf("mount %q is Bidirectional, which needs privilege", m.Name)
			}
			mounts[v.HostPath.Path] = m
		}
		for hp := range mounts {
			if !slices.ContainsFunc(want.Mounts, func(w hostMount) bool { return w.HostPath == hp }) {
				t.Errorf("host path %s is mounted, but the plugin does not use it", hp)
			}
		}
		for _, w := range want.Mounts {
			m, ok := mounts[w.HostPath]
			if !ok {
				t.Errorf("host path %s is not mounted", w.HostPath)
				continue
			}
			if m.ReadOnly != w.ReadOnly {
				t.Errorf("%s: readOnly = %v, want %v", w.HostPath, m.ReadOnly, w.ReadOnly)
			}
			var looks, told string
			if w.Where != nil {
				looks, told = w.Where(flag), "its flags"
			} else {
				looks, told = strings.TrimSuffix(flag(w.Env), "/")+w.Suffix, fmt.Sprintf("%s=%q", w.Env, flag(w.Env))
			}
			if looks != m.MountPath {
				t.Errorf("%s is mounted at %s but %s looks at %s (told by %s)", w.HostPath, m.MountPath, want.Program, looks, told)
			}
		}
	})

	t.Run("the health state file is in a directory the plugin may write", func(t *testing.T) {
		file := flag(envHealthStateFile)
		if file == "" {
			t.Fatalf("%s is not set: what only kernel events said is lost at every restart", envHealthStateFile)
		}
		for _, m := range c.VolumeMounts {
			if !m.ReadOnly && strings.HasPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/") {
				return
			}
		}
		t.Errorf("%s=%s is in no writable mount: the container's root filesystem is read-only", envHealthStateFile, file)
	})

	t.Run("every env var is one the CLI reads, with a value it parses", func(t *testing.T) {
		checkEnvAgainstCLI(t, want.Program, env)
		for _, e := range c.Env {
			for _, msg := range validation.IsEnvVarName(e.Name) {
				t.Errorf("env %s: %s", e.Name, msg)
			}
		}
		for k, v := range want.Env {
			got, ok := env[k]
			switch {
			case v == "" && ok:
				t.Errorf("env %s = %q, want it unset", k, got)
			case v != "" && got != v:
				t.Errorf("env %s = %q, want %q", k, got, v)
			}
		}
	})

	t.Run("the probe port is exposed, and the metrics port only with metrics on", func(t *testing.T) {
		ports := map[string]int32{}
		for _, p := range c.Ports {
			ports[p.Name] = p.ContainerPort
		}
		wantPorts := map[string]int32{"probes": want.ProbePort}
		if want.MetricsPort != 0 {
			wantPorts["metrics"] = want.MetricsPort
		}
		if !maps.Equal(ports, wantPorts) {
			t.Errorf("ports = %v, want %v", ports, wantPorts)
		}
		if got, want := env[probeEnv], fmt.Sprintf(":%d", want.ProbePort); got != want {
			t.Errorf("%s = %q, want %q", probeEnv, got, want)
		}
	})
}

func ptrText[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}

// cliDefault returns the default of the flag behind an env var of p.
func cliDefault(t *testing.T, p program, env string) string {
	t.Helper()
	f, ok := cliEnv(t, p)[env]
	if !ok {
		t.Fatalf("%s defines no flag with env %s", p, env)
	}
	return f.Default
}

// checkRule holds a NodeFeatureRule to what our nodeSelector relies on: one
// rule labels nodes with an Intel display-class PCI device with exactly the
// label selected on.
func checkRule(t *testing.T, r *nodeFeatureRule, label string) {
	t.Helper()
	for _, msg := range validation.IsQualifiedName(label) {
		t.Errorf("label %q: %s", label, msg)
	}
	if prefix, _, _ := strings.Cut(label, "/"); prefix != "feature.node.kubernetes.io" && !strings.HasSuffix(prefix, ".feature.node.kubernetes.io") {
		t.Errorf("label %q is outside the namespaces NFD allows by default", label)
	}
	if r.Metadata.Namespace != "" {
		t.Errorf("NodeFeatureRule is cluster-scoped, but has namespace %q", r.Metadata.Namespace)
	}
	for _, rule := range r.Spec.Rules {
		if rule.Labels[label] != "true" {
			continue
		}
		for _, f := range rule.MatchFeatures {
			if f.Feature != "pci.device" {
				t.Errorf("rule %q also matches %s: a node without it loses the agent", rule.Name, f.Feature)
				continue
			}
			vendor, class := f.MatchExpressions["vendor"], f.MatchExpressions["class"]
			if vendor.Op != "In" || !slices.Equal(vendor.Value, []string{"8086"}) {
				t.Errorf("rule %q: vendor = %+v, want In [8086]", rule.Name, vendor)
			}
			if class.Op != "In" || !slices.Contains(class.Value, "0300") || !slices.Contains(class.Value, "0380") {
				t.Errorf("rule %q: class = %+v, want In [0300 0380]", rule.Name, class)
			}
		}
		return
	}
	t.Errorf("no rule in %q sets %s=true", r.Metadata.Name, label)
}
