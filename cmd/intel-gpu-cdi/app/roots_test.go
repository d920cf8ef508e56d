package app_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

// TestAWrongRootIsAnErrorNeverADeletion runs list and generate on roots
// that are not a node, with a good spec of ours at --output: each must
// stop with exit 1 and an error naming the root flag, the root and what is
// missing, and leave the spec exactly as it was.
func TestAWrongRootIsAnErrorNeverADeletion(t *testing.T) {
	tests := []struct {
		name string
		// roots returns --sysfs-root and --dev-root for a fake node with a GPU.
		roots   func(t *testing.T, n *fakenode.Node) (sys, dev string)
		wantErr func(sys, dev string) string
	}{
		{
			name:  "an empty directory as --sysfs-root",
			roots: func(t *testing.T, n *fakenode.Node) (string, string) { return t.TempDir(), n.Dev },
			wantErr: func(sys, _ string) string {
				return "--sysfs-root " + sys + ": does not look like sysfs: it has no class/ and no devices/"
			},
		},
		{
			name:    "the node's root instead of its sys",
			roots:   func(_ *testing.T, n *fakenode.Node) (string, string) { return filepath.Dir(n.Sys), n.Dev },
			wantErr: func(sys, _ string) string { return "--sysfs-root " + sys + ": does not look like sysfs" },
		},
		{
			name: "a sysfs without class/drm",
			roots: func(t *testing.T, n *fakenode.Node) (string, string) {
				must(t, os.RemoveAll(filepath.Join(n.Sys, "class", "drm")))
				return n.Sys, n.Dev
			},
			wantErr: func(sys, _ string) string {
				return "--sysfs-root " + sys + ": no class/drm directory: no DRM driver is loaded, or this is not the host's sysfs"
			},
		},
		{
			name:    "a --dev-root without dri/ while sysfs shows the GPU",
			roots:   func(t *testing.T, n *fakenode.Node) (string, string) { return n.Sys, t.TempDir() },
			wantErr: func(_, dev string) string { return "--dev-root " + dev + ": has no usable dri/" },
		},
		{
			name:    "a missing --sysfs-root",
			roots:   func(t *testing.T, n *fakenode.Node) (string, string) { return filepath.Join(t.TempDir(), "sys"), n.Dev },
			wantErr: func(sys, _ string) string { return "--sysfs-root: stat " + sys + ": no such file or directory" },
		},
	}
	for _, tt := range tests {
		for _, command := range [][]string{{"generate", "--output"}, {"list"}} {
			t.Run(command[0]+" on "+tt.name, func(t *testing.T) {
				n := node(t, fakenode.IGPU)
				sys, dev := tt.roots(t, n)
				spec := filepath.Join(t.TempDir(), "intel.com-gpu.yaml")
				must(t, os.WriteFile(spec, []byte(oldSpec), 0o644))
				before := lstat(t, spec)
				a := []string{command[0], "--sysfs-root", sys, "--dev-root", dev}
				if len(command) > 1 {
					a = append(a, command[1], spec)
				}
				r := run(t, a...)
				want := "intel-gpu-cdi: " + tt.wantErr(sys, dev)
				if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, want) {
					t.Errorf("exit %d, stdout %q, stderr %q; want exit 1, nothing on stdout, %q", r.code, r.stdout, r.stderr, want)
				}
				if strings.Contains(r.stderr, "no ready Intel GPU") {
					t.Errorf("a wrong root reads as a node without GPUs: %q", r.stderr)
				}
				if after := lstat(t, spec); !after.same(before) {
					t.Errorf("the spec at --output changed")
				}
			})
		}
	}
}

// TestOnlyAValidNodeWithoutGPUsRemovesOurSpec is the one case where
// generate removes: a real node layout with no ready GPU, a spec of ours.
func TestOnlyAValidNodeWithoutGPUsRemovesOurSpec(t *testing.T) {
	n := node(t, fakenode.IGPU, func(n *fakenode.Node) error { return n.RemoveDevNodes("0000:00:02.0") })
	spec := filepath.Join(t.TempDir(), "intel.com-gpu.yaml")
	must(t, os.WriteFile(spec, []byte(oldSpec), 0o644))
	r := run(t, args([]string{"generate", "--output", spec}, roots(n))...)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if _, err := os.Lstat(spec); err == nil {
		t.Error("the stale spec is still there")
	}
	for _, want := range []string{"no ready Intel GPU found", "removed the stale CDI spec " + spec} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr %q does not say %q", r.stderr, want)
		}
	}
}
