package deploy_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
)

// A node runs the device plugin or the DRA driver, never both for the same
// GPUs: its label kubeletPluginLabel chooses. The device plugin's
// DaemonSets run on every node not labelled dra, so unlabelled nodes keep
// the device plugin as before; the DRA driver's only where it says dra.

const kubeletPluginLabel = "gpu.intel.com/kubelet-plugin"

// kubeletPluginLabelValues are the values a node may carry: "" stands for
// no label at all, and "DRA" for a value that is neither of the two.
var kubeletPluginLabelValues = []string{"", "deviceplugin", "dra", "DRA"}

// servesLabel says whether p must run on a node labelled value.
func servesLabel(p program, value string) bool {
	if p == draDriver {
		return value == "dra"
	}
	return value != "dra"
}

func labelText(value string) string {
	if value == "" {
		return "(no " + kubeletPluginLabel + " label)"
	}
	return fmt.Sprintf("%s=%q", kubeletPluginLabel, value)
}

// satisfyingLabels are labels a node needs to pass whatever else spec
// selects on (its nodeSelector, and the first value of each In requirement
// of its first required affinity term), so that only the kubelet-plugin
// label decides.
func satisfyingLabels(spec corev1.PodSpec) map[string]string {
	out := maps.Clone(spec.NodeSelector)
	if out == nil {
		out = map[string]string{}
	}
	if a := spec.Affinity; a != nil && a.NodeAffinity != nil && a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil {
		if terms := a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms; len(terms) > 0 {
			for _, e := range terms[0].MatchExpressions {
				if e.Key != kubeletPluginLabel && e.Operator == corev1.NodeSelectorOpIn && len(e.Values) > 0 {
					out[e.Key] = e.Values[0]
				}
			}
		}
	}
	return out
}

// labelledNode is a node with the labels others and, unless value is "",
// the kubelet-plugin label set to value.
func labelledNode(value string, others map[string]string) *corev1.Node {
	l := maps.Clone(others)
	if l == nil {
		l = map[string]string{}
	}
	if value != "" {
		l[kubeletPluginLabel] = value
	}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gpu-node-1", Labels: l}}
}

// runsOn says whether the scheduler's required node affinity (nodeSelector
// and requiredDuringScheduling terms, as the DaemonSet controller checks
// them) admits spec's pod on node.
func runsOn(t *testing.T, spec corev1.PodSpec, node *corev1.Node) bool {
	t.Helper()
	ok, err := nodeaffinity.GetRequiredNodeAffinity(&corev1.Pod{Spec: spec}).Match(node)
	if err != nil {
		t.Fatalf("node affinity: %v", err)
	}
	return ok
}

// kubeletPluginDaemonSet is one rendered DaemonSet of either kubelet plugin.
type kubeletPluginDaemonSet struct {
	From    string
	Program program
	DS      *appsv1.DaemonSet
}

// allKubeletPluginDaemonSets renders every kustomization and the chart's
// value sets that deploy a kubelet plugin.
func allKubeletPluginDaemonSets(t *testing.T) []kubeletPluginDaemonSet {
	t.Helper()
	var out []kubeletPluginDaemonSet
	add := func(from string, r rendered) {
		for _, ds := range r.DaemonSets {
			p := devicePlugin
			if strings.HasSuffix(ds.Name, "-dra") {
				p = draDriver
			}
			out = append(out, kubeletPluginDaemonSet{From: from + " " + ds.Name, Program: p, DS: ds})
		}
	}
	for _, name := range slices.Sorted(maps.Keys(kustomizeCases)) {
		add("kustomize "+name, kustomize(t, deployments("kustomize", name)))
	}
	for _, values := range []struct{ name, yaml string }{
		{"default values", ""}, {"kubeletPlugin dra", "kubeletPlugin: dra"},
		{"kubeletPlugin both", "kubeletPlugin: both"}, {"every optional value on", everythingOn},
	} {
		r, err := helmTemplate(t, values.yaml)
		if err != nil {
			t.Fatalf("helm %s: %v", values.name, err)
		}
		add("helm "+values.name, r)
	}
	return out
}

// Whatever combination of our manifests a cluster applies (the kustomize
// base or an overlay with kustomize/dra, the chart in any mode, or a mix),
// a node gets exactly one kubelet plugin, whatever its label says.
func TestEachNodeRunsExactlyOneKubeletPlugin(t *testing.T) {
	all := allKubeletPluginDaemonSets(t)
	var dps, dras []kubeletPluginDaemonSet
	for _, d := range all {
		if d.Program == draDriver {
			dras = append(dras, d)
		} else {
			dps = append(dps, d)
		}
	}
	if len(dps) == 0 || len(dras) == 0 {
		t.Fatalf("%d device-plugin and %d DRA DaemonSets rendered; want both kinds", len(dps), len(dras))
	}
	for _, dp := range dps {
		for _, dra := range dras {
			others := satisfyingLabels(dp.DS.Spec.Template.Spec)
			maps.Copy(others, satisfyingLabels(dra.DS.Spec.Template.Spec))
			for _, value := range kubeletPluginLabelValues {
				node := labelledNode(value, others)
				onDP, onDRA := runsOn(t, dp.DS.Spec.Template.Spec, node), runsOn(t, dra.DS.Spec.Template.Spec, node)
				if onDP == onDRA {
					t.Errorf("a node labelled %s: %s runs there: %v, %s runs there: %v; want exactly one",
						labelText(value), dp.From, onDP, dra.From, onDRA)
				}
			}
		}
	}
}

// Two DaemonSets of one rendering must not claim each other's pods.
func TestNoDaemonSetSelectsAnothersPods(t *testing.T) {
	for _, values := range []string{"kubeletPlugin: both", everythingOn} {
		r, err := helmTemplate(t, values)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.DaemonSets) != 2 {
			t.Fatalf("%d DaemonSets, want 2", len(r.DaemonSets))
		}
		for _, a := range r.DaemonSets {
			for _, b := range r.DaemonSets {
				if a == b {
					continue
				}
				sel, err := metav1.LabelSelectorAsSelector(a.Spec.Selector)
				if err != nil {
					t.Fatal(err)
				}
				if sel.Matches(labels.Set(b.Spec.Template.Labels)) {
					t.Errorf("%s's selector %v matches the pods of %s", a.Name, a.Spec.Selector, b.Name)
				}
			}
		}
	}
	base, dra := kustomize(t, deployments("kustomize", "base")), kustomize(t, deployments("kustomize", "dra"))
	sel, err := metav1.LabelSelectorAsSelector(base.DaemonSets[0].Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if sel.Matches(labels.Set(dra.DaemonSets[0].Spec.Template.Labels)) {
		t.Errorf("the base's selector matches the DRA driver's pods")
	}
}
