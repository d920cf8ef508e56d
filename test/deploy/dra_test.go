package deploy_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/cel-go/cel"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	resourcev1 "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/dra"
)

// The DRA driver's deployment: its DaemonSet is held to the same rule as
// the device plugin's (checkAgent, violations), with two writable host
// paths of its own declared as grants; its service account may do exactly
// what the kubelet plugin helper needs, and the admission policy keeps
// each node's driver to that node's ResourceSlices.

const (
	envRegistrarDir = "INTEL_GPU_CDI_KUBELET_REGISTRAR_DIR"
	envPluginsDir   = "INTEL_GPU_CDI_KUBELET_PLUGINS_DIR"
	envDriverName   = "INTEL_GPU_CDI_DRIVER_NAME"
	// draServiceAccount is the kustomization's account for the driver.
	draServiceAccount = "intel-gpu-cdi-dra"
)

// draPaths are the DRA driver's host directories.
type draPaths struct {
	Registrar, PluginsDir, Driver string
	Dirs                          pluginDirs
}

// defaultDRAPaths are where a stock install keeps them.
var defaultDRAPaths = draPaths{
	Registrar:  dra.DefaultRegistrarDir,
	PluginsDir: dra.DefaultPluginsDir,
	Driver:     dra.DefaultDriverName,
	Dirs:       defaultPluginDirs,
}

// dataDir is the driver's own directory, as the driver derives it.
func (p draPaths) dataDir() string {
	return (&dra.Config{PluginsDir: p.PluginsDir, DriverName: p.Driver}).DataDir()
}

// draMounts are the host paths of the DRA driver: the GPU nodes and the
// device plugin's dir to look at, the spec to write, the registration
// socket, and the driver's own directory (not the kubelet's whole plugins
// dir).
func draMounts(p draPaths) []hostMount {
	return []hostMount{
		{HostPath: "/dev/dri", ReadOnly: true, Env: envDevRoot, Suffix: "/dri"},
		{HostPath: p.Dirs.CDISpecDir, Env: envCDISpecDir},
		{HostPath: p.Registrar, Env: envRegistrarDir},
		{HostPath: p.dataDir(), Where: func(flag func(string) string) string {
			return (&dra.Config{PluginsDir: flag(envPluginsDir), DriverName: flag(envDriverName)}).DataDir()
		}},
		{HostPath: p.Dirs.KubeletSocketDir, ReadOnly: true, Env: envKubeletSocketDir},
	}
}

// draPolicy is the rule for the DRA driver: the CDI spec dir, and the two
// kubelet directories it must write as grants. The device-plugin dir is
// not writable for it.
func draPolicy(p draPaths) agentPolicy {
	return agentPolicy{
		Dirs: pluginDirs{CDISpecDir: p.Dirs.CDISpecDir},
		Grants: grants{Writable: map[string]string{
			p.Registrar: "the DRA driver's registration socket <driver>-reg.sock: the kubelet's plugin watcher looks for DRA drivers there and nowhere else",
			p.dataDir(): "the DRA driver's own directory: dra.sock, which the kubelet dials at the host path the driver registered, the checkpoint of prepared claims and the health state; the rest of the kubelet's plugins dir (other drivers', CSI's) is not mounted",
		}},
	}
}

// stockDRA returns the expectations every rendering of the DRA driver
// starts from.
func stockDRA() agentExpectations {
	return agentExpectations{
		Program:        draDriver,
		Mounts:         draMounts(defaultDRAPaths),
		Policy:         draPolicy(defaultDRAPaths),
		ProbePort:      defaultProbePort,
		SELinuxType:    defaultSELinuxType,
		ServiceAccount: draServiceAccount,
	}
}

// leastDRARules are the only permissions the DRA driver's account gets:
// what k8s.io/dynamic-resource-allocation v0.37.2's kubelet plugin helper
// calls (its ResourceSlice controller lists, watches, creates, updates and
// deletes slices, and gets the Node for its UID; the helper gets each claim
// it prepares), and the driver's own reads of checkpointed claims.
var leastDRARules = []rbacv1.PolicyRule{
	{APIGroups: []string{"resource.k8s.io"}, Resources: []string{"resourceslices"}, Verbs: []string{"list", "watch", "create", "update", "delete"}},
	{APIGroups: []string{"resource.k8s.io"}, Resources: []string{"resourceclaims"}, Verbs: []string{"get"}},
	{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get"}},
}

// checkNoDRAObjects fails if a rendering of the device plugin alone brings
// any of the DRA driver's objects.
func checkNoDRAObjects(t *testing.T, r rendered) {
	t.Helper()
	if n := len(r.ServiceAccounts) + len(r.ClusterRoles) + len(r.ClusterRoleBindings) + len(r.Policies) + len(r.PolicyBindings) + len(r.DeviceClasses); n != 0 {
		t.Errorf("renders %d objects of the DRA driver (accounts, RBAC, policies, DeviceClasses), want none", n)
	}
}

// checkDRAObjects holds the DRA driver's cluster objects to what ds, the
// driver's DaemonSet, relies on.
func checkDRAObjects(t *testing.T, r rendered, ds *appsv1.DaemonSet, driver string, deviceClasses bool) {
	t.Helper()
	if len(r.ServiceAccounts) != 1 || len(r.ClusterRoles) != 1 || len(r.ClusterRoleBindings) != 1 || len(r.Policies) != 1 || len(r.PolicyBindings) != 1 {
		t.Fatalf("%d ServiceAccounts, %d ClusterRoles, %d ClusterRoleBindings, %d policies, %d policy bindings; want one of each",
			len(r.ServiceAccounts), len(r.ClusterRoles), len(r.ClusterRoleBindings), len(r.Policies), len(r.PolicyBindings))
	}
	sa, role, binding := r.ServiceAccounts[0], r.ClusterRoles[0], r.ClusterRoleBindings[0]
	username := "system:serviceaccount:" + sa.Namespace + ":" + sa.Name

	t.Run("the DaemonSet runs as the account the RBAC binds", func(t *testing.T) {
		spec := ds.Spec.Template.Spec
		if sa.Name != spec.ServiceAccountName || sa.Namespace != ds.Namespace {
			t.Errorf("ServiceAccount %s/%s, but the DaemonSet %s/%s runs as %s", sa.Namespace, sa.Name, ds.Namespace, ds.Name, spec.ServiceAccountName)
		}
		if sa.AutomountServiceAccountToken != nil && !*sa.AutomountServiceAccountToken {
			t.Errorf("the ServiceAccount turns token mounting off")
		}
		want := rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name}
		if binding.RoleRef != want {
			t.Errorf("ClusterRoleBinding roleRef %+v, want %+v", binding.RoleRef, want)
		}
		subject := rbacv1.Subject{Kind: "ServiceAccount", Name: sa.Name, Namespace: sa.Namespace}
		if !slices.Equal(binding.Subjects, []rbacv1.Subject{subject}) {
			t.Errorf("ClusterRoleBinding subjects %+v, want only %+v", binding.Subjects, subject)
		}
	})

	t.Run("the account may do exactly what the kubelet plugin helper needs", func(t *testing.T) {
		if !slices.EqualFunc(role.Rules, leastDRARules, func(a, b rbacv1.PolicyRule) bool {
			return slices.Equal(a.APIGroups, b.APIGroups) && slices.Equal(a.Resources, b.Resources) &&
				slices.Equal(a.Verbs, b.Verbs) && len(a.ResourceNames) == 0 && len(a.NonResourceURLs) == 0
		}) {
			t.Errorf("ClusterRole rules %+v, want exactly %+v", role.Rules, leastDRARules)
		}
	})

	t.Run("the admission policy binds, and keeps the driver to its node's slices", func(t *testing.T) {
		p, b := r.Policies[0], r.PolicyBindings[0]
		if b.Spec.PolicyName != p.Name || !slices.Equal(b.Spec.ValidationActions, []admissionv1.ValidationAction{admissionv1.Deny}) {
			t.Errorf("binding %s: policy %q with actions %v, want %q with [Deny]", b.Name, b.Spec.PolicyName, b.Spec.ValidationActions, p.Name)
		}
		if b.Spec.MatchResources != nil || b.Spec.ParamRef != nil {
			t.Errorf("binding %s narrows the policy (matchResources %v, paramRef %v)", b.Name, b.Spec.MatchResources, b.Spec.ParamRef)
		}
		if p.Spec.FailurePolicy == nil || *p.Spec.FailurePolicy != admissionv1.Fail {
			t.Errorf("failurePolicy %v, want Fail: an error must not let a write through", ptrText(p.Spec.FailurePolicy))
		}
		checkPolicyCovers(t, p)
		checkPolicyDecisions(t, p, username, driver)
	})

	t.Run("the DeviceClasses select the driver's devices and serve the device plugin's resources", func(t *testing.T) {
		if !deviceClasses {
			if len(r.DeviceClasses) != 0 {
				t.Errorf("%d DeviceClasses rendered, want none", len(r.DeviceClasses))
			}
			return
		}
		byName := map[string]*resourcev1.DeviceClass{}
		for _, c := range r.DeviceClasses {
			byName[c.Name] = c
		}
		if len(byName) != 3 {
			t.Errorf("%d DeviceClasses, want 3", len(r.DeviceClasses))
		}
		for name, extended := range map[string]string{driver: "", "i915." + driver: "gpu.intel.com/i915", "xe." + driver: "gpu.intel.com/xe"} {
			c, ok := byName[name]
			if !ok {
				t.Errorf("no DeviceClass %s", name)
				continue
			}
			if got := ptr.Deref(c.Spec.ExtendedResourceName, ""); got != extended {
				t.Errorf("DeviceClass %s: extendedResourceName %q, want %q", name, got, extended)
			}
			if len(c.Spec.Selectors) != 1 || c.Spec.Selectors[0].CEL == nil ||
				!strings.HasPrefix(c.Spec.Selectors[0].CEL.Expression, fmt.Sprintf("device.driver == %q", driver)) {
				t.Errorf("DeviceClass %s: selectors %+v, want one CEL selector starting with device.driver == %q", name, c.Spec.Selectors, driver)
			}
		}
	})
}

// checkPolicyCovers wants the policy to see every write of ResourceSlices.
func checkPolicyCovers(t *testing.T, p *admissionv1.ValidatingAdmissionPolicy) {
	t.Helper()
	mc := p.Spec.MatchConstraints
	if mc == nil || len(mc.ResourceRules) != 1 {
		t.Fatalf("matchConstraints %+v, want one resource rule", mc)
	}
	rule := mc.ResourceRules[0]
	ops := rule.Operations
	if !slices.Equal(rule.APIGroups, []string{"resource.k8s.io"}) || !slices.Equal(rule.APIVersions, []string{"*"}) ||
		!slices.Equal(rule.Resources, []string{"resourceslices"}) ||
		!slices.Contains(ops, admissionv1.Create) || !slices.Contains(ops, admissionv1.Update) || !slices.Contains(ops, admissionv1.Delete) {
		t.Errorf("the policy matches %+v, want CREATE, UPDATE and DELETE of resource.k8s.io/*/resourceslices", rule)
	}
	if mc.NamespaceSelector != nil && len(mc.NamespaceSelector.MatchLabels)+len(mc.NamespaceSelector.MatchExpressions) > 0 ||
		mc.ObjectSelector != nil && len(mc.ObjectSelector.MatchLabels)+len(mc.ObjectSelector.MatchExpressions) > 0 {
		t.Errorf("the policy selects namespaces or objects (%v, %v): a slice outside them would pass", mc.NamespaceSelector, mc.ObjectSelector)
	}
}

// admissionCase is one request to a policy: who writes which slice.
type admissionCase struct {
	name           string
	user, userNode string // userNode "" = a token that names no node
	op             admissionv1.OperationType
	sliceNode      string // "" = a slice for all nodes
	driver         string
	want           string // "allowed", "denied: <part of the message>", or "not matched"
}

// checkPolicyDecisions evaluates the policy's CEL, as the API server's
// admission does, on the writes the driver (username) and others may try.
func checkPolicyDecisions(t *testing.T, p *admissionv1.ValidatingAdmissionPolicy, username, driver string) {
	t.Helper()
	for _, tc := range []admissionCase{
		{"the driver creates its node's slice", username, "node-a", admissionv1.Create, "node-a", driver, "allowed"},
		{"the driver updates its node's slice", username, "node-a", admissionv1.Update, "node-a", driver, "allowed"},
		{"the driver deletes its node's slice", username, "node-a", admissionv1.Delete, "node-a", driver, "allowed"},
		{"the driver creates another node's slice", username, "node-a", admissionv1.Create, "node-b", driver, `denied: may only write that node's ResourceSlices, not one of node "node-b"`},
		{"the driver updates another node's slice", username, "node-a", admissionv1.Update, "node-b", driver, `denied: not one of node "node-b"`},
		{"the driver deletes another node's slice", username, "node-a", admissionv1.Delete, "node-b", driver, `denied: not one of node "node-b"`},
		{"the driver creates a slice for all nodes", username, "node-a", admissionv1.Create, "", driver, `denied: not one of node ""`},
		{"the driver creates another driver's slice on its node", username, "node-a", admissionv1.Create, "node-a", "other.example.org", "denied: not of other.example.org"},
		{"a token that names no node", username, "", admissionv1.Create, "node-a", driver, "denied: names no node"},
		{"the kubelet of another node", "system:node:node-b", "", admissionv1.Delete, "node-a", driver, "not matched"},
		{"another service account", "system:serviceaccount:kube-system:other-dra-driver", "node-a", admissionv1.Create, "node-b", driver, "not matched"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := evalPolicy(t, p, tc)
			denial, denied := strings.CutPrefix(tc.want, "denied: ")
			if denied && !(strings.HasPrefix(got, "denied: ") && strings.Contains(got, denial)) || !denied && got != tc.want {
				t.Errorf("decision %q, want %q", got, tc.want)
			}
		})
	}
}

// evalPolicy decides tc with p's matchConditions, variables and validations
// compiled by cel-go with the optional-types library the API server also
// enables. It returns "not matched", "allowed", or "denied: <message>".
func evalPolicy(t *testing.T, p *admissionv1.ValidatingAdmissionPolicy, tc admissionCase) string {
	t.Helper()
	env, err := cel.NewEnv(cel.OptionalTypes(),
		cel.Variable("request", cel.DynType), cel.Variable("object", cel.DynType),
		cel.Variable("oldObject", cel.DynType), cel.Variable("variables", cel.DynType))
	if err != nil {
		t.Fatal(err)
	}
	slice := func() any {
		s := &resourcev1.ResourceSlice{
			TypeMeta:   metav1.TypeMeta{APIVersion: "resource.k8s.io/v1", Kind: "ResourceSlice"},
			ObjectMeta: metav1.ObjectMeta{Name: "slice"},
			Spec:       resourcev1.ResourceSliceSpec{Driver: tc.driver, Pool: resourcev1.ResourcePool{Name: tc.sliceNode, ResourceSliceCount: 1}},
		}
		if tc.sliceNode == "" {
			s.Spec.AllNodes = ptr.To(true)
		} else {
			s.Spec.NodeName = ptr.To(tc.sliceNode)
		}
		return asJSONMap(t, s)
	}
	extra := map[string]any{}
	if tc.userNode != "" {
		extra["authentication.kubernetes.io/node-name"] = []any{tc.userNode}
	}
	vars := map[string]any{}
	in := map[string]any{
		"request":   map[string]any{"operation": string(tc.op), "userInfo": map[string]any{"username": tc.user, "extra": extra}},
		"object":    nil,
		"oldObject": nil,
		"variables": vars,
	}
	if tc.op != admissionv1.Delete {
		in["object"] = slice()
	}
	if tc.op != admissionv1.Create {
		in["oldObject"] = slice()
	}
	eval := func(what, expr string) any {
		ast, iss := env.Compile(expr)
		if iss.Err() != nil {
			t.Fatalf("%s %q does not compile: %v", what, expr, iss.Err())
		}
		prg, err := env.Program(ast)
		if err != nil {
			t.Fatalf("%s %q: %v", what, expr, err)
		}
		out, _, err := prg.Eval(in)
		if err != nil {
			// failurePolicy Fail: an error denies.
			return fmt.Sprintf("error: %v", err)
		}
		return out.Value()
	}
	for _, mc := range p.Spec.MatchConditions {
		if eval("matchCondition "+mc.Name, mc.Expression) != true {
			return "not matched"
		}
	}
	for _, v := range p.Spec.Variables {
		vars[v.Name] = eval("variable "+v.Name, v.Expression)
	}
	for _, v := range p.Spec.Validations {
		if eval("validation", v.Expression) == true {
			continue
		}
		msg := v.Message
		if v.MessageExpression != "" {
			msg = fmt.Sprint(eval("messageExpression", v.MessageExpression))
		}
		return "denied: " + msg
	}
	return "allowed"
}

// asJSONMap is obj as the admission chain hands it to CEL: its JSON form.
func asJSONMap(t *testing.T, obj any) map[string]any {
	t.Helper()
	data, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}
