package deploy_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/dra"
)

// nfdLabel is what our NodeFeatureRule puts on Intel GPU nodes.
const nfdLabel = "intel-gpu-cdi.feature.node.kubernetes.io/gpu"

// kustomize renders the kustomization in dir as `kubectl kustomize` would.
func kustomize(t *testing.T, dir string) rendered {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out, err := m.AsYaml()
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	return decodeAll(t, out)
}

// kustomizeCases says what each kustomization must render; the test also
// fails when a kustomization appears under deployments/kustomize that is not
// listed here, so a new overlay cannot ship unchecked.
//
// An overlay that needs more than the base on the host declares it here, in
// grants, with the reason; the rule for the others does not move.
var kustomizeCases = map[string]struct {
	agent *agentExpectations // nil: renders no DaemonSet
	rule  bool               // renders our NodeFeatureRule
	dra   bool               // renders the DRA driver's account, RBAC, policy and DeviceClasses
}{
	"base": {agent: agent(func(a *agentExpectations) {
		a.Env = map[string]string{
			"INTEL_GPU_CDI_DEVICE_LIST_STRATEGY": "",
			"INTEL_GPU_CDI_SHARED_DEV_NUM":       "",
			"INTEL_GPU_CDI_ENABLE_MONITORING":    "",
			"INTEL_GPU_CDI_METRICS_ADDRESS":      "",
		}
	})},
	"overlays/nfd_labeled_nodes": {
		agent: agent(func(a *agentExpectations) { a.NodeSelector = map[string]string{nfdLabel: "true"} }),
		rule:  true,
	},
	"overlays/shared-dev": {agent: agent(func(a *agentExpectations) {
		a.Env = map[string]string{
			"INTEL_GPU_CDI_SHARED_DEV_NUM":    "4",
			"INTEL_GPU_CDI_ALLOCATION_POLICY": "balanced",
		}
	})},
	"overlays/monitoring": {agent: agent(func(a *agentExpectations) {
		a.Env = map[string]string{
			"INTEL_GPU_CDI_ENABLE_MONITORING": "true",
			"INTEL_GPU_CDI_METRICS_ADDRESS":   ":9400",
		}
		a.MetricsPort = 9400
	})},
	"overlays/cdi-annotations": {agent: agent(func(a *agentExpectations) {
		a.Env = map[string]string{"INTEL_GPU_CDI_DEVICE_LIST_STRATEGY": "cdi-annotations"}
	})},
	"overlays/non-root": {agent: agent(func(a *agentExpectations) {
		a.User, a.Group = nonRootID, nonRootID
	})},
	"nfd": {rule: true},
	// The DRA driver: a kustomization beside base, not an overlay of it, so
	// that applying or deleting it leaves the device plugin alone.
	"dra": {agent: ptr.To(stockDRA()), dra: true},
}

// agent returns the stock expectations changed by edit.
func agent(edit func(*agentExpectations)) *agentExpectations {
	a := stockAgent()
	edit(&a)
	return &a
}

func TestEveryKustomizationIsChecked(t *testing.T) {
	root := deployments("kustomize")
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !slices.Contains([]string{"kustomization.yaml", "kustomization.yml", "Kustomization"}, d.Name()) {
			return nil
		}
		rel, err := filepath.Rel(root, filepath.Dir(p))
		if err != nil {
			return err
		}
		if _, ok := kustomizeCases[filepath.ToSlash(rel)]; !ok {
			t.Errorf("kustomization %s has no entry in kustomizeCases", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestKustomizations(t *testing.T) {
	for name, tc := range kustomizeCases {
		t.Run(name, func(t *testing.T) {
			r := kustomize(t, deployments("kustomize", filepath.FromSlash(name)))

			wantDS := 0
			if tc.agent != nil {
				wantDS = 1
			}
			if len(r.DaemonSets) != wantDS {
				t.Fatalf("%d DaemonSets, want %d", len(r.DaemonSets), wantDS)
			}
			if tc.agent != nil {
				ds := r.DaemonSets[0]
				want := "intel-gpu-cdi"
				if tc.agent.Program == draDriver {
					want = "intel-gpu-cdi-dra"
				}
				if ds.Name != want || ds.Namespace != "kube-system" {
					t.Errorf("DaemonSet is %s/%s, want kube-system/%s", ds.Namespace, ds.Name, want)
				}
				checkAgent(t, ds, *tc.agent)
				if tc.dra {
					checkDRAObjects(t, r, ds, dra.DefaultDriverName, true)
				}
			}
			if !tc.dra {
				checkNoDRAObjects(t, r)
			}

			if !tc.rule {
				if len(r.Rules) != 0 {
					t.Errorf("renders %d NodeFeatureRules, want none", len(r.Rules))
				}
				return
			}
			if len(r.Rules) != 1 {
				t.Fatalf("renders %d NodeFeatureRules, want 1", len(r.Rules))
			}
			checkRule(t, r.Rules[0], nfdLabel)
		})
	}
}

// The base and the DRA kustomization pin their images to the release the
// tree is, and that is the chart's appVersion: one version for both ways to
// install, and for both binaries.
func TestKustomizeImagesAreTheChartsAppVersion(t *testing.T) {
	chrt, err := loader.Load(deployments("helm", "intel-gpu-cdi"))
	if err != nil {
		t.Fatal(err)
	}
	for dir, repository := range map[string]string{
		"base": "ghcr.io/intel-gpu-cdi/intel-gpu-cdi",
		"dra":  "ghcr.io/intel-gpu-cdi/intel-gpu-cdi-dra",
	} {
		r := kustomize(t, deployments("kustomize", dir))
		if len(r.DaemonSets) != 1 {
			t.Fatalf("%s: %d DaemonSets, want 1", dir, len(r.DaemonSets))
		}
		image := r.DaemonSets[0].Spec.Template.Spec.Containers[0].Image
		if want := repository + ":" + chrt.Metadata.AppVersion; image != want {
			t.Errorf("%s: image %q, want %s (Chart.yaml appVersion)", dir, image, want)
		}
	}
}
