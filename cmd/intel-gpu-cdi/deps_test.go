package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestTheDevicePluginBinaryDoesNotLinkTheDRAStack keeps client-go and the
// DRA helper out of intel-gpu-cdi: their package init costs memory and
// start-up time in every subcommand, so the DRA driver is its own binary
// (BENCHMARKS.md, "One binary or two").
func TestTheDevicePluginBinaryDoesNotLinkTheDRAStack(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, banned := range []string{"k8s.io/client-go/", "k8s.io/dynamic-resource-allocation/", "k8s.io/api/"} {
			if strings.HasPrefix(pkg, banned) {
				t.Errorf("intel-gpu-cdi links %s", pkg)
			}
		}
	}
}
