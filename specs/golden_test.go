// Package specs holds the CDI specs intel-gpu-cdi emits for the fake nodes
// of test/fakenode, one YAML and one JSON file per fixture. The test below
// regenerates them and fails on any byte of difference; run it with
// -update to rewrite them (see README.md).
package specs

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"
	specs "tags.cncf.io/container-device-interface/specs-go"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/spec"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/testenv"
)

// goldens names each fixture's files: <name>.yaml and <name>.json.
var goldens = []struct {
	name    string
	fixture func(*fakenode.Node) error
}{
	{"igpu", fakenode.IGPU},
	{"discrete-xe", fakenode.DiscreteXe},
	{"sriov", fakenode.SRIOV},
	{"tricky", fakenode.Tricky},
}

func TestGoldenSpecs(t *testing.T) {
	var want []string
	for _, g := range goldens {
		n := fakenode.NewT(t)
		n.MustApply(t, g.fixture)
		res, err := discovery.New(discovery.WithSysfsRoot(n.Sys), discovery.WithDevRoot(n.Dev)).Scan()
		if err != nil {
			t.Fatal(err)
		}
		devs := normalize(t, n, res.Devices)
		b, err := spec.NewBuilder()
		if err != nil {
			t.Fatal(err)
		}
		s, err := b.Build(devs)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []spec.Format{spec.FormatYAML, spec.FormatJSON} {
			file := g.name + "." + string(f)
			want = append(want, file)
			t.Run(fmt.Sprintf("%s matches what the %s fixture produces", file, g.name), func(t *testing.T) {
				got, err := spec.Marshal(s, f)
				if err != nil {
					t.Fatal(err)
				}
				if *testenv.Update {
					if err := os.WriteFile(file, got, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				golden, err := os.ReadFile(file)
				if err != nil {
					t.Fatalf("%v (run go test ./... -args -update to create it)", err)
				}
				if !bytes.Equal(got, golden) {
					t.Errorf("%s is stale; run go test ./... -args -update and review the diff. Generated:\n%s", file, got)
				}
				if _, err := cdiapi.ReadSpec(file, 0); err != nil {
					t.Errorf("the CDI library rejects %s: %v", file, err)
				}
				// What a runtime reads from the file is exactly the spec
				// built, with the library's parser and with the one of
				// CDI 0.5 (podman 4.3).
				v3, err := cdiapi.ParseSpec(golden)
				if err != nil || !reflect.DeepEqual(v3, s) {
					t.Errorf("the CDI library reads %s as another spec (%v)", file, err)
				}
				var v2 *specs.Spec
				if err := yaml.UnmarshalStrict(golden, &v2); err != nil || !reflect.DeepEqual(v2, s) {
					t.Errorf("sigs.k8s.io/yaml reads %s as another spec (%v)", file, err)
				}
			})
		}
	}
	t.Run("no golden file is left over from a fixture that is gone", func(t *testing.T) {
		entries, err := os.ReadDir(".")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range entries {
			if ext := filepath.Ext(e.Name()); ext == ".yaml" || ext == ".json" {
				got = append(got, e.Name())
			}
		}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("specs/ holds %v, the fixtures make %v", got, want)
		}
	})
}

// normalize rewrites the host side of every node and link as if the fake
// node were the machine's own /dev, with kernel numbering: cardN is 226:N
// and renderDM is 226:M. On a tree of real char nodes (Mknod mode) that is
// exactly what discovery found, and the test checks it; in HostDevices mode
// (no root) discovery found symlinks to /dev/null and friends, whose
// numbers are replaced. Either way the goldens come out the same.
func normalize(t *testing.T, n *fakenode.Node, devs []discovery.Device) []discovery.Device {
	t.Helper()
	out := slices.Clone(devs)
	for i := range out {
		d := &out[i]
		fix := func(node *discovery.Node) {
			name := filepath.Base(node.Path)
			minor, ok := discovery.ParseCardName(name)
			if !ok {
				minor, ok = discovery.ParseRenderName(name)
			}
			if !ok {
				t.Fatalf("%s: node %s is neither a card nor a render node", d.Card, node.Path)
			}
			want := discovery.Node{Path: node.Path, HostPath: filepath.Join(n.Dev, "dri", name), Major: discovery.DRMMajor, Minor: uint32(minor)}
			if n.Mode() == fakenode.Mknod && *node != want {
				t.Errorf("%s: discovery found %+v on real char nodes, want %+v", d.Card, *node, want)
			}
			*node = discovery.Node{Path: node.Path, HostPath: "/dev/dri/" + name, Major: want.Major, Minor: want.Minor}
		}
		fix(&d.CardNode)
		if d.RenderNode != nil {
			r := *d.RenderNode
			fix(&r)
			d.RenderNode = &r
		}
		links := slices.Clone(d.ByPath)
		for j := range links {
			rel, ok := strings.CutPrefix(links[j].HostPath, n.Dev+"/")
			if !ok {
				t.Fatalf("%s: by-path link %s is not below the dev root %s", d.Card, links[j].HostPath, n.Dev)
			}
			links[j].HostPath = "/dev/" + rel
		}
		d.ByPath = links
	}
	return out
}
