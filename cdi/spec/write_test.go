package spec_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"
	specs "tags.cncf.io/container-device-interface/specs-go"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/spec"
)

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func igpuSpec(t testing.TB) *specs.Spec {
	t.Helper()
	s, err := newBuilder(t).Build([]discovery.Device{igpuDevice()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// withUmask runs the rest of the test under the given umask. Umask is
// process-wide: tests that use it must not run in parallel.
func withUmask(t *testing.T, mask int) {
	old := syscall.Umask(mask)
	t.Cleanup(func() { syscall.Umask(old) })
}

func mode(t *testing.T, p string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// dirNames lists dir, so a test can tell that no temporary file was left.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func TestFormatOfFollowsWhatRuntimesRead(t *testing.T) {
	tests := []struct {
		name, path string
		want       spec.Format
	}{
		{name: "a .json file is JSON", path: "/etc/cdi/intel.com-gpu.json", want: spec.FormatJSON},
		{name: "a .yaml file is YAML", path: "/etc/cdi/intel.com-gpu.yaml", want: spec.FormatYAML},
		{name: "a .yml file is refused: runtimes skip it", path: "/etc/cdi/intel.com-gpu.yml"},
		{name: "a .JSON file is refused: runtimes match the extension exactly", path: "spec.JSON"},
		{name: "a .txt file is refused", path: "spec.txt"},
		{name: "a file without an extension is refused", path: "/etc/cdi/spec"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := spec.FormatOf(tt.path)
			if got != tt.want {
				t.Errorf("FormatOf(%q) = %q, want %q", tt.path, got, tt.want)
			}
			if tt.want == "" && (!errors.Is(err, spec.ErrExtension) || !strings.Contains(err.Error(), tt.path) ||
				!strings.Contains(err.Error(), "runtimes read only .json and .yaml")) {
				t.Errorf("FormatOf(%q) error %v, want ErrExtension naming the path", tt.path, err)
			}
			if tt.want != "" && err != nil {
				t.Errorf("FormatOf(%q) error %v", tt.path, err)
			}
		})
	}
}

func TestWriteLeavesASpecEveryoneCanRead(t *testing.T) {
	tests := []struct {
		name    string
		rel     string // below the test's temp dir
		newDirs []string
		before  *os.FileMode // an existing file at rel with this mode
	}{
		{name: "a new file in an existing directory", rel: "intel.com-gpu.yaml"},
		{name: "missing parent directories are created 0755", rel: "etc/cdi/intel.com-gpu.json", newDirs: []string{"etc", "etc/cdi"}},
		{name: "an existing 0600 spec is replaced by a 0644 one", rel: "intel.com-gpu.yaml", before: ptr(fs.FileMode(0o600))},
	}
	for _, tt := range tests {
		t.Run(tt.name+", even under umask 077", func(t *testing.T) {
			withUmask(t, 0o077)
			root := t.TempDir()
			p := filepath.Join(root, tt.rel)
			if tt.before != nil {
				if err := os.WriteFile(p, []byte(ourSpecYAML(t)), *tt.before); err != nil {
					t.Fatal(err)
				}
			}
			f, err := spec.FormatOf(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := spec.Write(p, igpuSpec(t), f); err != nil {
				t.Fatal(err)
			}
			if m := mode(t, p); m != 0o644 {
				t.Errorf("spec mode %v, want 0644", m)
			}
			for _, d := range tt.newDirs {
				if m := mode(t, filepath.Join(root, d)); m != 0o755 {
					t.Errorf("directory %s mode %v, want 0755", d, m)
				}
			}
			if names := dirNames(t, filepath.Dir(p)); !slices.Equal(names, []string{filepath.Base(p)}) {
				t.Errorf("directory holds %v, want only the spec", names)
			}
			read, err := cdiapi.ReadSpec(p, 0)
			if err != nil {
				t.Fatalf("the CDI library rejects the written spec: %v", err)
			}
			if got, want := mustJSON(t, read.Spec), mustJSON(t, igpuSpec(t)); got != want {
				t.Errorf("written spec\n%s\nwant\n%s", got, want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestWriteFailureLeavesTheOldFile(t *testing.T) {
	const old = "cdiVersion: 0.5.0\nkind: intel.com/gpu\ndevices: []\n# the old spec\n"
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string) string // returns the path to write
		spec    func(t testing.TB) *specs.Spec
		wantErr string
	}{
		{
			name:    "a spec the CDI library rejects is not written",
			setup:   func(_ *testing.T, dir string) string { return filepath.Join(dir, "intel.com-gpu.yaml") },
			spec:    func(t testing.TB) *specs.Spec { s := igpuSpec(t); s.Devices[0].Name = "card 0"; return s },
			wantErr: "rejected by the CDI library",
		},
		{
			name:    "a spec without devices is not written",
			setup:   func(_ *testing.T, dir string) string { return filepath.Join(dir, "intel.com-gpu.yaml") },
			spec:    func(t testing.TB) *specs.Spec { s := igpuSpec(t); s.Devices = nil; return s },
			wantErr: "rejected by the CDI library",
		},
		{
			name: "a parent that is a file is an error",
			setup: func(_ *testing.T, dir string) string {
				return filepath.Join(dir, "intel.com-gpu.yaml", "spec.yaml")
			},
			spec:    igpuSpec,
			wantErr: "not a directory",
		},
		{
			name: "a directory in the spec's place is not replaced",
			setup: func(t *testing.T, dir string) string {
				p := filepath.Join(dir, "taken.yaml")
				if err := os.Mkdir(p, 0o755); err != nil {
					t.Fatal(err)
				}
				return p
			},
			spec:    igpuSpec,
			wantErr: "it is a directory",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			existing := filepath.Join(dir, "intel.com-gpu.yaml")
			if err := os.WriteFile(existing, []byte(old), 0o644); err != nil {
				t.Fatal(err)
			}
			target := tt.setup(t, dir)
			before := dirNames(t, dir)
			err := spec.Write(target, tt.spec(t), spec.FormatYAML)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Write error %v, want one containing %q", err, tt.wantErr)
			}
			if data, _ := os.ReadFile(existing); string(data) != old {
				t.Errorf("the old spec changed to %q", data)
			}
			if after := dirNames(t, dir); !slices.Equal(after, before) {
				t.Errorf("directory holds %v after the failure, had %v", after, before)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	valid, err := spec.Marshal(igpuSpec(t), spec.FormatYAML)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		data    string
		wantErr bool
	}{
		{name: "our spec passes", data: string(valid)},
		{name: "an unknown field fails, as the library is strict", data: string(valid) + "extra: 1\n", wantErr: true},
		{name: "a spec without a kind fails", data: strings.Replace(string(valid), "kind: intel.com/gpu\n", "", 1), wantErr: true},
		{name: "a cdiVersion older than the content needs fails", data: strings.Replace(string(valid), "0.5.0", "0.3.0", 1), wantErr: true},
		{name: "text that is not YAML fails", data: "{{{", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := spec.Validate([]byte(tt.data)); (err != nil) != tt.wantErr {
				t.Errorf("Validate = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestRemoveStale(t *testing.T) {
	ours, err := spec.Marshal(igpuSpec(t), spec.FormatYAML)
	if err != nil {
		t.Fatal(err)
	}
	theirs := bytes.Replace(ours, []byte("kind: intel.com/gpu"), []byte("kind: nvidia.com/gpu"), 1)
	tests := []struct {
		name        string
		content     []byte // nil: no file
		wantRemoved bool
		wantErr     string
	}{
		{name: "a spec of our kind is removed", content: ours, wantRemoved: true},
		{name: "a missing file is not an error"},
		{name: "another kind's spec is left alone", content: theirs, wantErr: `it holds a CDI spec of kind "nvidia.com/gpu", not "intel.com/gpu"`},
		{name: "a file that is not a CDI spec is left alone", content: []byte("hello: [\n"), wantErr: "it is not a CDI spec"},
		{name: "an empty file is left alone", content: []byte{}, wantErr: "it is not a CDI spec"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "intel.com-gpu.yaml")
			if tt.content != nil {
				if err := os.WriteFile(p, tt.content, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			removed, err := spec.RemoveStale(p, "intel.com/gpu")
			if removed != tt.wantRemoved {
				t.Errorf("removed = %v, want %v", removed, tt.wantRemoved)
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("unexpected error %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("error %v, want one containing %q", err, tt.wantErr)
			}
			data, readErr := os.ReadFile(p)
			switch {
			case tt.wantRemoved || tt.content == nil:
				if readErr == nil {
					t.Error("the file is still there")
				}
			case !bytes.Equal(data, tt.content):
				t.Errorf("the file changed to %q", data)
			}
		})
	}
}

func TestCleanTempRemovesOnlyOurLeftovers(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{".intel-gpu-cdi-intel.com-gpu.yaml.123", ".intel-gpu-cdi-validate.9", "intel.com-gpu.yaml", ".other-tool.tmp"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, ".intel-gpu-cdi-a-directory"), 0o755); err != nil {
		t.Fatal(err)
	}
	n, err := spec.CleanTemp(dir)
	if err != nil || n != 2 {
		t.Errorf("CleanTemp = %d, %v; want 2, nil", n, err)
	}
	want := []string{".intel-gpu-cdi-a-directory", ".other-tool.tmp", "intel.com-gpu.yaml"}
	if got := dirNames(t, dir); !slices.Equal(got, want) {
		t.Errorf("left %v, want %v", got, want)
	}
	if n, err := spec.CleanTemp(filepath.Join(dir, "missing")); n != 0 || err != nil {
		t.Errorf("CleanTemp of a missing dir = %d, %v; want 0, nil", n, err)
	}
}
