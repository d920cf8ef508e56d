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

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
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
		switch tm.APIVersion + " " + tm.Kind {
		case "apps/v1 DaemonSet":
			ds := &appsv1.DaemonSet{}
			if err := yaml.UnmarshalStrict(doc, ds); err != nil {
				t.Fatalf("DaemonSet does not decode strictly: %v\n%s", err, doc)
			}
			out.DaemonSets = append(out.DaemonSets, ds)
		case "nfd.k8s-sigs.io/v1alpha1 NodeFeatureRule":
			r := &nodeFeatureRule{}
			if err := yaml.UnmarshalStrict(doc, r); err != nil {
				t.Fatalf("NodeFeatureRule does not decode strictly: %v\n%s", err, doc)
			}
			out.Rules = append(out.Rules, r)
		default:
			t.Fatalf("unexpected object %s %s:\n%s", tm.APIVersion, tm.Kind, doc)
		}
	}
	return out
}

// hostMount is what a DaemonSet must mount from the host.
type hostMount struct {
	HostPath string
	ReadOnly bool
	// Env names the flag that must point at the mount (through the
	// container's env, or the flag's default), and Suffix what the flag adds
	// to the mount path ("/dri" for --dev-root).
	Env, Suffix string
}

// agentExpectations is what every rendering of the node agent must satisfy.
type agentExpectations struct {
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
}

// The defaults of a stock install.
const (
	defaultProbePort   = 8081
	defaultSELinuxType = "container_device_plugin_t"
	// nonRootID is the UID and GID of the non-root overlay and Helm value,
	// and the group the node preparation files grant access to.
	nonRootID = 65532
)

// defaultMounts are the host paths of a stock install: the GPU nodes to
// look at, and the plugin's two directories. Not /sys: the runtime gives the
// container its own read-only sysfs, which shows the host's PCI and DRM.
func defaultMounts() []hostMount {
	return []hostMount{
		{HostPath: "/dev/dri", ReadOnly: true, Env: "INTEL_GPU_CDI_DEV_ROOT", Suffix: "/dri"},
		{HostPath: defaultPluginDirs.KubeletSocketDir, Env: "INTEL_GPU_CDI_KUBELET_SOCKET_DIR"},
		{HostPath: defaultPluginDirs.CDISpecDir, Env: "INTEL_GPU_CDI_CDI_SPEC_DIR"},
	}
}

// stockAgent returns the expectations every rendering starts from.
func stockAgent() agentExpectations {
	return agentExpectations{
		Mounts:      defaultMounts(),
		Policy:      agentPolicy{Dirs: defaultPluginDirs},
		ProbePort:   defaultProbePort,
		SELinuxType: defaultSELinuxType,
	}
}

// containerEnv returns the container's env as a map; valueFrom is refused
// because every setting is a literal flag value.
func containerEnv(t *testing.T, c corev1.Container) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			t.Errorf("env %s uses valueFrom; the agent's settings are literal flag values", e.Name)
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
		if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
			t.Errorf("automountServiceAccountToken must be false: the agent never calls the API server")
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

	if len(spec.InitContainers) > 0 || len(spec.EphemeralContainers) > 0 {
		t.Errorf("unexpected init or ephemeral containers")
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("want exactly one container, got %d", len(spec.Containers))
	}
	c := spec.Containers[0]
	env := containerEnv(t, c)

	t.Run("the container runs the plugin subcommand of the image's entrypoint", func(t *testing.T) {
		if len(c.Command) != 0 {
			t.Errorf("command %v overrides the image entrypoint", c.Command)
		}
		if len(c.Args) == 0 || c.Args[0] != "plugin" {
			t.Errorf("args = %v, want [plugin ...]", c.Args)
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

	t.Run("the host paths are exactly those the plugin uses, mounted where it is told", func(t *testing.T) {
		volumes := map[string]corev1.Volume{}
		for _, v := range spec.Volumes {
			volumes[v.Name] = v
		}
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
			flagValue, set := env[w.Env]
			if !set {
				flagValue = cliDefault(t, w.Env)
			}
			if got := strings.TrimSuffix(flagValue, "/") + w.Suffix; got != m.MountPath {
				t.Errorf("%s is mounted at %s but the plugin is told %s=%q", w.HostPath, m.MountPath, w.Env, flagValue)
			}
		}
	})

	t.Run("every env var is one the CLI reads, with a value it parses", func(t *testing.T) {
		checkEnvAgainstCLI(t, c.Args[0], env)
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

// cliDefault returns the default of the plugin flag behind an env var.
func cliDefault(t *testing.T, env string) string {
	t.Helper()
	f, ok := cliEnv(t, "plugin")[env]
	if !ok {
		t.Fatalf("the CLI defines no flag with env %s", env)
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
