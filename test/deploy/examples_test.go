package deploy_test

import (
	"os"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
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
