package deploy_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

func TestDemoPodAsksForOneGPUAndListsDRI(t *testing.T) {
	data, err := os.ReadFile(deployments("examples", "demo-pod.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(data, &pod); err != nil {
		t.Fatalf("demo pod does not decode strictly: %v", err)
	}
	if pod.APIVersion != "v1" || pod.Kind != "Pod" {
		t.Fatalf("%s %s, want v1 Pod", pod.APIVersion, pod.Kind)
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	// Extended resources are set in limits (requests default to them).
	if got := c.Resources.Limits["gpu.intel.com/i915"]; got.Cmp(resource.MustParse("1")) != 0 {
		t.Errorf("limits gpu.intel.com/i915 = %s, want 1", got.String())
	}
	if !slices.Equal(c.Command, []string{"ls", "-l", "/dev/dri"}) {
		t.Errorf("command %v, want ls -l /dev/dri", c.Command)
	}
	if pod.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restartPolicy %q: a one-shot listing should not restart", pod.Spec.RestartPolicy)
	}
}

// draExample is one file of deployments/examples/dra, decoded strictly.
type draExample struct {
	File       string
	Namespaces []*corev1.Namespace
	Templates  []*resourcev1.ResourceClaimTemplate
	Claims     []*resourcev1.ResourceClaim
	Pods       []*corev1.Pod
}

func readDRAExamples(t *testing.T) []draExample {
	t.Helper()
	files, err := filepath.Glob(deployments("examples", "dra", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples in deployments/examples/dra (%v)", err)
	}
	var out []draExample
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ex := draExample{File: filepath.Base(f)}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", ex.File, err)
			}
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &tm); err != nil {
				t.Fatalf("%s: %v", ex.File, err)
			}
			switch kind := tm.APIVersion + " " + tm.Kind; kind {
			case "v1 Namespace":
				ex.Namespaces = append(ex.Namespaces, strictInto[corev1.Namespace](t, ex.File+": "+kind, doc))
			case "resource.k8s.io/v1 ResourceClaimTemplate":
				ex.Templates = append(ex.Templates, strictInto[resourcev1.ResourceClaimTemplate](t, ex.File+": "+kind, doc))
			case "resource.k8s.io/v1 ResourceClaim":
				ex.Claims = append(ex.Claims, strictInto[resourcev1.ResourceClaim](t, ex.File+": "+kind, doc))
			case "v1 Pod":
				ex.Pods = append(ex.Pods, strictInto[corev1.Pod](t, ex.File+": "+kind, doc))
			default:
				t.Fatalf("%s: unexpected %s", ex.File, kind)
			}
		}
		out = append(out, ex)
	}
	return out
}

// Each DRA example applies as it is: its pods use claims the same file
// defines, in their namespace, of DeviceClasses that ship, and list the
// GPU nodes they get. (test/dra checks their selectors and capacities
// against what the driver publishes.)
func TestDRAExamplesAreWiredAndApplyAsTheyAre(t *testing.T) {
	classes := map[string]*resourcev1.DeviceClass{}
	for _, c := range kustomize(t, deployments("kustomize", "dra")).DeviceClasses {
		classes[c.Name] = c
	}
	readme, err := os.ReadFile(deployments("README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var sharedClaims, adminRequests, extendedPods int
	for _, ex := range readDRAExamples(t) {
		t.Run(ex.File, func(t *testing.T) {
			if !strings.Contains(string(readme), "examples/dra/"+ex.File) {
				t.Errorf("deployments/README.md does not show how to apply %s", ex.File)
			}
			adminNamespaces := map[string]bool{}
			for _, ns := range ex.Namespaces {
				adminNamespaces[ns.Name] = ns.Labels["resource.kubernetes.io/admin-access"] == "true"
			}
			requests := func(where string, ns string, dc resourcev1.DeviceClaim) {
				for _, r := range dc.Requests {
					if r.Exactly == nil {
						t.Errorf("%s request %s: no exactly", where, r.Name)
						continue
					}
					if _, ok := classes[r.Exactly.DeviceClassName]; !ok {
						t.Errorf("%s request %s: DeviceClass %q is not shipped in kustomize/dra", where, r.Name, r.Exactly.DeviceClassName)
					}
					if ptr.Deref(r.Exactly.AdminAccess, false) {
						adminRequests++
						if !adminNamespaces[ns] {
							t.Errorf("%s asks for admin access in namespace %q, which the file does not label resource.kubernetes.io/admin-access: \"true\"", where, ns)
						}
					}
				}
			}
			templates, claims := map[string]bool{}, map[string]int{}
			for _, tpl := range ex.Templates {
				templates[tpl.Namespace+"/"+tpl.Name] = true
				requests("ResourceClaimTemplate "+tpl.Name, tpl.Namespace, tpl.Spec.Spec.Devices)
			}
			for _, c := range ex.Claims {
				claims[c.Namespace+"/"+c.Name] = 0
				requests("ResourceClaim "+c.Name, c.Namespace, c.Spec.Devices)
			}
			if len(ex.Pods) == 0 {
				t.Errorf("no pod shows the example in use")
			}
			for _, pod := range ex.Pods {
				checkExamplePod(t, pod)
				podClaims := map[string]bool{}
				for _, rc := range pod.Spec.ResourceClaims {
					podClaims[rc.Name] = false
					switch {
					case rc.ResourceClaimTemplateName != nil:
						if !templates[pod.Namespace+"/"+*rc.ResourceClaimTemplateName] {
							t.Errorf("pod %s: template %s is not in the file's namespace %q", pod.Name, *rc.ResourceClaimTemplateName, pod.Namespace)
						}
					case rc.ResourceClaimName != nil:
						key := pod.Namespace + "/" + *rc.ResourceClaimName
						if _, ok := claims[key]; !ok {
							t.Errorf("pod %s: claim %s is not in the file's namespace %q", pod.Name, *rc.ResourceClaimName, pod.Namespace)
						}
						claims[key]++
					}
				}
				c := pod.Spec.Containers[0]
				for _, cc := range c.Resources.Claims {
					if _, ok := podClaims[cc.Name]; !ok {
						t.Errorf("pod %s: container uses claim %q, which the pod does not list", pod.Name, cc.Name)
					}
					podClaims[cc.Name] = true
				}
				for name, used := range podClaims {
					if !used {
						t.Errorf("pod %s: claim %q is never used by a container", pod.Name, name)
					}
				}
				if q, ok := c.Resources.Limits["gpu.intel.com/i915"]; ok {
					extendedPods++
					if q.Cmp(resource.MustParse("1")) != 0 || len(pod.Spec.ResourceClaims) != 0 {
						t.Errorf("pod %s: an unchanged device-plugin pod asks for gpu.intel.com/i915: 1 and nothing else", pod.Name)
					}
					if !slices.ContainsFunc(slices.Collect(maps.Values(classes)), func(c *resourcev1.DeviceClass) bool {
						return ptr.Deref(c.Spec.ExtendedResourceName, "") == "gpu.intel.com/i915"
					}) {
						t.Errorf("pod %s asks for gpu.intel.com/i915, which no shipped DeviceClass serves", pod.Name)
					}
				}
			}
			for _, n := range claims {
				if n > 1 {
					sharedClaims++
				}
			}
		})
	}
	if sharedClaims == 0 || adminRequests == 0 || extendedPods == 0 {
		t.Errorf("shared claims %d, admin-access requests %d, extended-resource pods %d: want an example of each", sharedClaims, adminRequests, extendedPods)
	}
}

// checkExamplePod wants a one-shot pod that lists /dev/dri from a pinned
// image.
func checkExamplePod(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	if len(pod.Spec.Containers) != 1 {
		t.Errorf("pod %s: %d containers, want 1", pod.Name, len(pod.Spec.Containers))
		return
	}
	c := pod.Spec.Containers[0]
	if !slices.Equal(c.Command, []string{"ls", "-l", "/dev/dri"}) {
		t.Errorf("pod %s: command %v, want ls -l /dev/dri", pod.Name, c.Command)
	}
	if _, tag, ok := strings.Cut(c.Image, ":"); !ok || tag == "latest" {
		t.Errorf("pod %s: image %q is not pinned", pod.Name, c.Image)
	}
	if pod.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("pod %s: restartPolicy %q: a one-shot listing should not restart", pod.Name, pod.Spec.RestartPolicy)
	}
}
