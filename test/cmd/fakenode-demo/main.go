// Command fakenode-demo lays out a fake node (test/fakenode) in a directory,
// so that intel-gpu-cdi can be tried without an Intel GPU: `make demo` runs
// it and then points `intel-gpu-cdi list` and `generate` at <root>/sys and
// <root>/dev. As root the /dev/dri entries are real char devices 226:N;
// otherwise they are symlinks to /dev/null and friends (HostDevices mode),
// which discovery follows, so the demo works without privileges.
package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

var fixtures = map[string]func(*fakenode.Node) error{
	"demo":        fakenode.Demo,
	"igpu":        fakenode.IGPU,
	"discrete-xe": fakenode.DiscreteXe,
	"sriov":       fakenode.SRIOV,
	"tricky":      fakenode.Tricky,
}

func main() {
	root := flag.String("root", "", "directory to create the node in (required; created if missing)")
	fixture := flag.String("fixture", "demo", "what the node holds: "+strings.Join(names(), ", "))
	mode := flag.String("mode", "auto", "auto (mknod when permitted), mknod or host-devices")
	flag.Parse()
	if err := run(*root, *fixture, *mode); err != nil {
		fmt.Fprintf(os.Stderr, "fakenode-demo: %v\n", err)
		os.Exit(1)
	}
}

func run(root, fixture, mode string) error {
	if root == "" {
		return fmt.Errorf("-root is required")
	}
	apply, ok := fixtures[fixture]
	if !ok {
		return fmt.Errorf("unknown fixture %q: want one of %s", fixture, strings.Join(names(), ", "))
	}
	var opts []fakenode.Option
	switch mode {
	case "auto":
	case "mknod":
		opts = append(opts, fakenode.WithMode(fakenode.Mknod))
	case "host-devices":
		opts = append(opts, fakenode.WithMode(fakenode.HostDevices))
	default:
		return fmt.Errorf("unknown mode %q: want auto, mknod or host-devices", mode)
	}
	n, err := fakenode.New(root, opts...)
	if err != nil {
		return err
	}
	if err := apply(n); err != nil {
		return err
	}
	how := "real char devices (226:N)"
	if n.Mode() == fakenode.HostDevices {
		how = "symlinks to host char devices (/dev/null, /dev/zero, ...), since mknod is not permitted"
	}
	fmt.Printf("fake node %q in %s mode: /dev/dri entries are %s\n", fixture, n.Mode(), how)
	fmt.Printf("  --sysfs-root %s --dev-root %s\n", n.Sys, n.Dev)
	return nil
}

func names() []string {
	var out []string
	for name := range fixtures {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}
