package discovery_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

func TestCheckRoots(t *testing.T) {
	tests := []struct {
		name string
		// node builds the roots; they start as a fake node with one iGPU.
		node     func(t *testing.T, n *fakenode.Node) (sys, dev string)
		wantRoot string // "" for no error
		wantErr  []string
		wantIs   error
	}{
		{name: "a fake node with a GPU passes",
			node: func(_ *testing.T, n *fakenode.Node) (string, string) { return n.Sys, n.Dev }},
		{name: "a node with class/drm and no GPU passes",
			node: func(t *testing.T, _ *fakenode.Node) (string, string) {
				e := fakenode.NewT(t)
				return e.Sys, e.Dev
			}},
		{name: "a node with only another vendor's card passes without dri/",
			node: func(t *testing.T, _ *fakenode.Node) (string, string) {
				e := fakenode.NewT(t)
				e.MustApply(t, func(n *fakenode.Node) error { return n.AddSimpleDRM(0) })
				removeAll(t, filepath.Join(e.Dev, "dri"))
				return e.Sys, e.Dev
			}},
		{name: "a missing sysfs root is an error",
			node: func(t *testing.T, n *fakenode.Node) (string, string) {
				return filepath.Join(t.TempDir(), "nope"), n.Dev
			},
			wantRoot: discovery.RootSysfs, wantErr: []string{"nope"}, wantIs: fs.ErrNotExist},
		{name: "a sysfs root that is a file is an error",
			node: func(t *testing.T, n *fakenode.Node) (string, string) {
				p := filepath.Join(t.TempDir(), "file")
				if err := os.WriteFile(p, nil, 0o644); err != nil {
					t.Fatal(err)
				}
				return p, n.Dev
			},
			wantRoot: discovery.RootSysfs, wantErr: []string{"is not a directory"}},
		{name: "an empty directory is not sysfs",
			node:     func(t *testing.T, n *fakenode.Node) (string, string) { return t.TempDir(), n.Dev },
			wantRoot: discovery.RootSysfs, wantErr: []string{"does not look like sysfs: it has no class/ and no devices/"}},
		{name: "a tree with class/ but no devices/ is not sysfs",
			node: func(t *testing.T, n *fakenode.Node) (string, string) {
				removeAll(t, filepath.Join(n.Sys, "devices"))
				return n.Sys, n.Dev
			},
			wantRoot: discovery.RootSysfs, wantErr: []string{"does not look like sysfs: it has no devices/"}},
		{name: "a sysfs without class/drm is ErrNoDRMClass",
			node: func(t *testing.T, n *fakenode.Node) (string, string) {
				removeAll(t, filepath.Join(n.Sys, "class", "drm"))
				return n.Sys, n.Dev
			},
			wantRoot: discovery.RootSysfs, wantErr: []string{"no class/drm"}, wantIs: discovery.ErrNoDRMClass},
		{name: "a missing dev root is an error",
			node: func(t *testing.T, n *fakenode.Node) (string, string) {
				return n.Sys, filepath.Join(t.TempDir(), "nodev")
			},
			wantRoot: discovery.RootDev, wantErr: []string{"nodev"}, wantIs: fs.ErrNotExist},
		{name: "a dev root without dri/ while sysfs shows an Intel GPU is an error",
			node:     func(t *testing.T, n *fakenode.Node) (string, string) { return n.Sys, t.TempDir() },
			wantRoot: discovery.RootDev, wantErr: []string{"has no usable dri/", "lists Intel GPU card0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := fakenode.NewT(t)
			n.MustApply(t, fakenode.IGPU)
			sys, dev := tt.node(t, n)
			err := discovery.New(discovery.WithSysfsRoot(sys), discovery.WithDevRoot(dev)).CheckRoots()
			if tt.wantRoot == "" {
				if err != nil {
					t.Fatalf("CheckRoots: %v", err)
				}
				return
			}
			var re *discovery.RootError
			if !errors.As(err, &re) {
				t.Fatalf("error %v, want a RootError", err)
			}
			path := sys
			if tt.wantRoot == discovery.RootDev {
				path = dev
			}
			if re.Root != tt.wantRoot || re.Path != path {
				t.Errorf("RootError for %s root %s, want %s root %s", re.Root, re.Path, tt.wantRoot, path)
			}
			for _, want := range append(tt.wantErr, path) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v is not %v", err, tt.wantIs)
			}
			if tt.wantIs != discovery.ErrNoDRMClass && errors.Is(err, discovery.ErrNoDRMClass) {
				t.Errorf("error %v is ErrNoDRMClass", err)
			}
		})
	}
}

func removeAll(t *testing.T, p string) {
	t.Helper()
	if err := os.RemoveAll(p); err != nil {
		t.Fatal(err)
	}
}

func TestEveryFakeNodeFixturePassesCheckRoots(t *testing.T) {
	for name, fixture := range map[string]func(*fakenode.Node) error{
		"IGPU": fakenode.IGPU, "DiscreteXe": fakenode.DiscreteXe, "SRIOV": fakenode.SRIOV,
		"Tricky": fakenode.Tricky, "Demo": fakenode.Demo,
	} {
		t.Run(name, func(t *testing.T) {
			n := fakenode.NewT(t)
			n.MustApply(t, fixture)
			if err := discovery.New(discovery.WithSysfsRoot(n.Sys), discovery.WithDevRoot(n.Dev)).CheckRoots(); err != nil {
				t.Errorf("CheckRoots: %v", err)
			}
		})
	}
}
