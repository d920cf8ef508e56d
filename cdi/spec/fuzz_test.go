package spec_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	specs "tags.cncf.io/container-device-interface/specs-go"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/spec"
)

// fuzzBytes hands out a fuzzer's bytes as the parts of a device set; past
// the end it hands out zeros.
type fuzzBytes []byte

func (b *fuzzBytes) next() byte {
	if len(*b) == 0 {
		return 0
	}
	c := (*b)[0]
	*b = (*b)[1:]
	return c
}

// pick returns one of the plausible values, or (for a high byte) a raw
// string of the fuzzer's bytes: a name or path no scan would produce.
func (b *fuzzBytes) pick(plausible ...string) string {
	c := b.next()
	if int(c) < 200 {
		return plausible[int(c)%len(plausible)]
	}
	n := min(int(b.next()%24), len(*b))
	s := string((*b)[:n])
	*b = (*b)[n:]
	return s
}

func (b *fuzzBytes) node(name string) discovery.Node {
	path := b.pick("/dev/dri/"+name, "/dev/dri/card0")
	return discovery.Node{
		Path:     path,
		HostPath: b.pick("/dev"+path[min(len(path), len("/dev")):], "/host/dev/dri/"+name, "/dev/dri/"+name),
		Major:    uint32(b.next()) + 220,
		Minor:    uint32(b.next()),
	}
}

// deviceSet turns fuzz input into up to eight devices: plausible ones,
// duplicates of a card name or PCI address, unusable ones, and ones with
// names or paths that no scan produces.
func deviceSet(data []byte) []discovery.Device {
	b := fuzzBytes(data)
	devs := make([]discovery.Device, int(b.next()%9))
	for i := range devs {
		d := &devs[i]
		d.Card = b.pick("card0", "card1", "card2", "card10", "all")
		d.PCIAddress = b.pick("0000:00:02.0", "0000:03:00.0", "0000:03:00.1", "0000:0a:00.0")
		d.CardNode = b.node(d.Card)
		if c := b.next(); c%3 != 0 {
			d.Render = fmt.Sprintf("renderD%d", 128+int(c%8))
			n := b.node(d.Render)
			d.RenderNode = &n
		}
		for range b.next() % 3 {
			suffix := b.pick("-card", "-render")
			d.ByPath = append(d.ByPath, discovery.Link{
				Path:     b.pick("/dev/dri/by-path/pci-"+d.PCIAddress+suffix, "/dev/dri/by-path/x"),
				HostPath: b.pick("/dev/dri/by-path/pci-"+d.PCIAddress+suffix, "/host/by-path/x"),
			})
		}
		d.Ready = b.next()%5 != 0
		if !d.Ready {
			d.Reason = "not ready"
		}
	}
	return devs
}

// FuzzBuild builds a spec from an arbitrary device set. Build either
// refuses with ErrNoDevices (nothing usable) or ErrBadDevice, or returns a spec that the CDI library accepts in
// both encodings, with each usable device under its card name and PCI
// address carrying exactly that device's nodes, "all" carrying every one,
// and no unusable device.
func FuzzBuild(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add([]byte{3, 0, 0, 0, 0, 6, 1, 1, 0, 0, 1, 1, 1, 1, 2, 1, 1, 2, 2, 0, 1, 2, 2, 1, 1, 2, 2, 1, 1, 1, 3, 3, 3, 3, 3})
	f.Add([]byte{2, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1})       // two devices with one PCI address
	f.Add([]byte{2, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1})       // two devices with one card name
	f.Add([]byte{1, 4, 0, 0, 0, 1, 1, 0, 0, 1})                            // a card named "all"
	f.Add([]byte{1, 250, 0, 0, 0, 0, 1, 1, 0, 0, 1})                       // an empty card name
	f.Add([]byte{1, 250, 5, 'c', 'a', 'r', 'd', '/', 0, 0, 0, 1, 1, 0, 0}) // a name with a slash
	f.Add([]byte{1, 0, 0, 250, 3, 'd', 'r', 'i', 0, 1, 1, 0, 0, 1})        // a relative node path
	f.Add([]byte{1, 0, 0, 0, 250, 0, 1, 1, 0, 0, 1})                       // an empty host path
	f.Add([]byte{2, 0, 0, 0, 0, 1, 1, 0, 0, 4, 0, 0, 0, 1, 1, 0, 0, 1})    // one usable, one not
	f.Fuzz(func(t *testing.T, data []byte) {
		devs := deviceSet(data)
		byPath := spec.ByPathSingle
		if len(data) > 0 && data[len(data)-1]%2 == 1 {
			byPath = spec.ByPathNone
		}
		b, err := spec.NewBuilder(spec.WithByPath(byPath))
		if err != nil {
			t.Fatal(err)
		}
		var usable []discovery.Device
		for _, d := range devs {
			if d.Usable() {
				usable = append(usable, d)
			}
		}

		s, err := b.Build(devs)
		switch {
		case err == nil:
		case len(usable) == 0 && errors.Is(err, spec.ErrNoDevices), len(usable) > 0 && errors.Is(err, spec.ErrBadDevice):
			return
		default:
			t.Fatalf("Build(%+v) = %v, with %d usable devices", devs, err, len(usable))
		}
		for _, f := range []spec.Format{spec.FormatJSON, spec.FormatYAML} {
			data, err := spec.Marshal(s, f)
			if err != nil {
				t.Fatalf("Marshal %s: %v", f, err)
			}
			if err := spec.Validate(data); err != nil {
				t.Fatalf("Build(%+v) returned a spec the CDI library refuses: %v\n%s", devs, err, data)
			}
		}

		got := map[string]*specs.Device{}
		for i := range s.Devices {
			got[s.Devices[i].Name] = &s.Devices[i]
		}
		if want := 2*len(usable) + 1; len(got) != want {
			t.Fatalf("%d spec devices for %d usable GPUs, want %d", len(got), len(usable), want)
		}
		var all []string
		for _, d := range usable {
			var want []string
			for _, n := range d.Nodes() {
				want = append(want, n.Path+"="+n.HostPath)
			}
			all = append(all, want...)
			for _, name := range spec.Names(&d) {
				if sd := got[name]; sd == nil || !slices.Equal(nodesOf(sd), want) {
					t.Fatalf("spec device %q has nodes %v, want %v", name, nodesOf(got[name]), want)
				}
			}
		}
		if sd := got[spec.AllDevice]; sd == nil || !slices.Equal(nodesOf(sd), all) {
			t.Fatalf("spec device %q has nodes %v, want %v", spec.AllDevice, nodesOf(got[spec.AllDevice]), all)
		}
	})
}

func nodesOf(d *specs.Device) []string {
	if d == nil {
		return nil
	}
	var out []string
	for _, n := range d.ContainerEdits.DeviceNodes {
		host := n.HostPath
		if host == "" {
			// The CDI library's default, which Build relies on.
			host = n.Path
		}
		out = append(out, n.Path+"="+host)
	}
	return out
}
