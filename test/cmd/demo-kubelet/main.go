// Command demo-kubelet shows the kubelet side of intel-gpu-cdi without a
// cluster: it builds the bundled fake node, runs `intel-gpu-cdi plugin` on
// it against a built-in fake kubelet, and prints the registration, the
// device lists and an Allocate answer. `make demo` runs it; no GPU and no
// root are needed.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakekubelet"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

func main() {
	binary := flag.String("binary", "bin/intel-gpu-cdi", "the intel-gpu-cdi binary to run")
	flag.Parse()
	if err := run(*binary); err != nil {
		fmt.Fprintf(os.Stderr, "demo-kubelet: %v\n", err)
		os.Exit(1)
	}
}

func run(binary string) error {
	root, err := os.MkdirTemp("", "intel-gpu-cdi-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)

	node, err := fakenode.New(filepath.Join(root, "node"))
	if err != nil {
		return err
	}
	if err := fakenode.Demo(node); err != nil {
		return err
	}
	kubelet, err := fakekubelet.Start(filepath.Join(root, "kubelet"))
	if err != nil {
		return err
	}
	defer kubelet.Stop()
	specDir := filepath.Join(root, "cdi")

	step("fake node (%s mode) at %s; fake kubelet at %s", node.Mode(), node.Root, kubelet.Socket())
	cmd := exec.Command(binary, "plugin",
		"--sysfs-root", node.Sys, "--dev-root", node.Dev,
		"--kubelet-socket-dir", kubelet.Dir(), "--cdi-spec-dir", specDir,
		"--device-list-strategy", "cdi-cri,cdi-annotations")
	cmd.Stdout, cmd.Stderr = os.Stdout, prefixed("    plugin | ")
	fmt.Printf("$ %s\n", strings.Join(cmd.Args, " "))
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", binary, err)
	}
	defer stop(cmd)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, res := range []string{"gpu.intel.com/i915", "gpu.intel.com/xe"} {
		req, err := kubelet.WaitRegistration(ctx, res, 1)
		if err != nil {
			return err
		}
		step("registration: resource %s, endpoint %s, API %s, preferred allocation %v",
			req.ResourceName, req.Endpoint, req.Version, req.Options.GetGetPreferredAllocationAvailable())
	}

	spec, err := cdiapi.ReadSpec(filepath.Join(specDir, "intel.com-gpu.json"), 0)
	if err != nil {
		return fmt.Errorf("the plugin's spec: %w", err)
	}
	var names []string
	for _, d := range spec.Devices {
		names = append(names, d.Name)
	}
	step("CDI spec %s (cdiVersion %s), devices: %s", spec.GetPath(), spec.Version, strings.Join(names, ", "))

	req, _ := kubelet.WaitRegistration(ctx, "gpu.intel.com/i915", 1)
	client, err := kubelet.Dial(req.Endpoint)
	if err != nil {
		return err
	}
	defer client.Close()
	lists, err := client.Watch(ctx)
	if err != nil {
		return err
	}
	list := <-lists
	step("ListAndWatch gpu.intel.com/i915:")
	for _, d := range list {
		numa := "-"
		if d.Topology != nil {
			numa = fmt.Sprint(d.Topology.Nodes[0].ID)
		}
		fmt.Printf("    %-14s %-9s NUMA %s\n", d.ID, d.Health, numa)
	}

	pref, err := client.GetPreferredAllocation(ctx, &pluginapi.PreferredAllocationRequest{
		ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{{AvailableDeviceIDs: ids(list), AllocationSize: 1}},
	})
	if err != nil {
		return err
	}
	chosen := pref.ContainerResponses[0].DeviceIDs
	step("GetPreferredAllocation of 1 from %v: %v", ids(list), chosen)

	resp, err := client.Allocate(ctx, &pluginapi.AllocateRequest{
		ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: chosen}},
	})
	if err != nil {
		return err
	}
	out, _ := json.MarshalIndent(resp.ContainerResponses[0], "    ", "  ")
	step("Allocate %v answers:\n    %s", chosen, out)
	step("the kubelet hands these names to the runtime, which injects %s's nodes from the spec", chosen[0])
	return nil
}

func ids(l []*pluginapi.Device) []string {
	out := make([]string, len(l))
	for i, d := range l {
		out[i] = d.ID
	}
	return out
}

func step(format string, args ...any) {
	fmt.Printf("==> "+format+"\n", args...)
}

// stop ends the plugin as the kubelet's pod teardown would: SIGTERM.
func stop(cmd *exec.Cmd) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			fmt.Fprintf(os.Stderr, "demo-kubelet: plugin: %v\n", err)
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
	}
}

type prefixWriter struct{ prefix string }

func prefixed(p string) *prefixWriter { return &prefixWriter{p} }

func (w *prefixWriter) Write(b []byte) (int, error) {
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if line != "" {
			fmt.Fprint(os.Stdout, w.prefix+line)
		}
	}
	return len(b), nil
}
