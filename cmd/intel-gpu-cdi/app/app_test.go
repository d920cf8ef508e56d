package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"
	specs "tags.cncf.io/container-device-interface/specs-go"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cmd/intel-gpu-cdi/app"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

// The app runs in-process through app.Main, as main runs it, with
// buffers for its output; code is the exit status main would return.

type result struct {
	stdout, stderr string
	code           int
	err            error // non-nil when code is not 0, holding stderr
}

func run(t *testing.T, args ...string) result {
	t.Helper()
	return runContext(t, context.Background(), args...)
}

func runContext(t *testing.T, ctx context.Context, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := app.Main(ctx, append([]string{"intel-gpu-cdi"}, args...), &stdout, &stderr)
	r := result{stdout: stdout.String(), stderr: stderr.String(), code: code}
	if code != 0 {
		r.err = fmt.Errorf("exit %d: %s", code, strings.TrimSpace(r.stderr))
	}
	return r
}

func node(t *testing.T, fixtures ...func(*fakenode.Node) error) *fakenode.Node {
	t.Helper()
	n := fakenode.NewT(t)
	n.MustApply(t, fixtures...)
	return n
}

func roots(n *fakenode.Node) []string {
	return []string{"--sysfs-root", n.Sys, "--dev-root", n.Dev}
}

func args(parts ...[]string) []string { return slices.Concat(parts...) }

func parseSpec(t *testing.T, data string) *specs.Spec {
	t.Helper()
	s, err := cdiapi.ParseSpec([]byte(data))
	if err != nil || s == nil {
		t.Fatalf("not a CDI spec (%v):\n%s", err, data)
	}
	return s
}

func names(s *specs.Spec) []string {
	var out []string
	for _, d := range s.Devices {
		out = append(out, d.Name)
	}
	return out
}

func mounts(s *specs.Spec) int {
	n := 0
	for _, d := range s.Devices {
		n += len(d.ContainerEdits.Mounts)
	}
	return n
}

func TestListTable(t *testing.T) {
	tests := []struct {
		name      string
		fixture   func(*fakenode.Node) error
		wantLines []string // each must appear, in this order, at the start of a line
		notWant   []string
	}{
		{
			name:      "the Tricky node lists its Intel cards in number order with their status",
			fixture:   fakenode.Tricky,
			wantLines: []string{"NAME", "card2 ", "card3 ", "card10 "},
			notWant:   []string{"0000:06:00.0", "simple-framebuffer"},
		},
		{
			name:      "an SR-IOV node shows the PF as not handed out and the VFs with their PF",
			fixture:   fakenode.SRIOV,
			wantLines: []string{"NAME", "card1 ", "card2 ", "card3 "},
		},
		{
			name:      "a node without GPUs says so",
			fixture:   func(*fakenode.Node) error { return nil },
			wantLines: []string{"NAME", "(no Intel GPU found)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, args([]string{"list"}, roots(node(t, tt.fixture)))...)
			if r.err != nil {
				t.Fatalf("list: %v\n%s", r.err, r.stderr)
			}
			lines := strings.Split(r.stdout, "\n")
			at := 0
			for _, want := range tt.wantLines {
				i := slices.IndexFunc(lines[at:], func(l string) bool { return strings.HasPrefix(l, want) })
				if i < 0 {
					t.Fatalf("no line starting %q after line %d in\n%s", want, at, r.stdout)
				}
				at += i + 1
			}
			for _, no := range tt.notWant {
				if strings.Contains(r.stdout, no) {
					t.Errorf("output mentions %q:\n%s", no, r.stdout)
				}
			}
		})
	}
	t.Run("each row tells whether the GPU is handed out and why not", func(t *testing.T) {
		var out string
		for _, fixture := range []func(*fakenode.Node) error{fakenode.Tricky, fakenode.SRIOV} {
			r := run(t, args([]string{"list"}, roots(node(t, fixture)))...)
			if r.err != nil {
				t.Fatal(r.err)
			}
			out += r.stdout
		}
		for _, want := range []string{
			"0000:00:02.0", "0x46a6", "xe", "ready",
			"not handed out: device node",
			"not handed out: physical function with 2 VFs enabled",
			"VF of 0000:03:00.0", "PF (2/7 VFs)",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})
}

func TestListJSON(t *testing.T) {
	r := run(t, args([]string{"list", "--format", "json"}, roots(node(t, fakenode.Tricky)))...)
	if r.err != nil {
		t.Fatal(r.err)
	}
	var out struct {
		Kind    string
		Devices []struct {
			Card      string
			HandedOut bool
			CDINames  []string
		}
		Ignored []struct{ Name, Reason string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, r.stdout)
	}
	var cards []string
	for _, d := range out.Devices {
		cards = append(cards, d.Card)
	}
	if want := []string{"card2", "card3", "card10"}; !slices.Equal(cards, want) {
		t.Errorf("devices %v, want %v", cards, want)
	}
	if len(out.Ignored) != 2 {
		t.Errorf("ignored %v, want simpledrm and NVIDIA", out.Ignored)
	}
	if out.Kind != "intel.com/gpu" {
		t.Errorf("kind %q", out.Kind)
	}
}

func TestListRejectsAnUnknownFormat(t *testing.T) {
	r := run(t, args([]string{"list", "--format", "yaml"}, roots(node(t, fakenode.IGPU)))...)
	if r.err == nil || !strings.Contains(r.err.Error(), `invalid list format "yaml"`) {
		t.Errorf("error %v, want an invalid list format", r.err)
	}
}

func TestGenerate(t *testing.T) {
	igpu := []string{"card0", "0000:00:02.0", "all"}
	tests := []struct {
		name       string
		flags      []string
		file       string // --output below the temp dir; "" for stdout
		wantJSON   bool
		wantKind   string
		wantNames  []string
		wantMounts int
	}{
		{name: "without --output a YAML spec goes to stdout", wantNames: igpu, wantMounts: 6},
		{name: "--format json writes JSON to stdout", flags: []string{"--format", "json"}, wantJSON: true, wantNames: igpu, wantMounts: 6},
		{name: "a .json output file is JSON", file: "intel.com-gpu.json", wantJSON: true, wantNames: igpu, wantMounts: 6},
		{name: "a .yaml output file is YAML", file: "intel.com-gpu.yaml", wantNames: igpu, wantMounts: 6},
		{name: "a --format that agrees with the extension is accepted", flags: []string{"--format", "json"}, file: "spec.json", wantJSON: true, wantNames: igpu, wantMounts: 6},
		{name: "/dev/stdout is standard output", flags: []string{"--output", "/dev/stdout"}, wantNames: igpu, wantMounts: 6},
		{name: "- is standard output, JSON on request", flags: []string{"--output", "-", "--format", "json"}, wantJSON: true, wantNames: igpu, wantMounts: 6},
		{name: "-o is short for --output", flags: []string{"-o"}, file: "cdi/intel.com-gpu.yaml", wantNames: igpu, wantMounts: 6},
		{name: "--by-path none leaves the by-path mounts out", flags: []string{"--by-path", "none"}, wantNames: igpu},
		{name: "--vendor and --class set the kind", flags: []string{"--vendor", "example.com", "--class", "igpu"}, wantKind: "example.com/igpu", wantNames: igpu, wantMounts: 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := node(t, fakenode.IGPU)
			a := args([]string{"generate"}, roots(n), tt.flags)
			var p string
			if tt.file != "" {
				p = filepath.Join(t.TempDir(), tt.file)
				if tt.flags == nil || tt.flags[len(tt.flags)-1] != "-o" {
					a = append(a, "--output")
				}
				a = append(a, p)
			}
			r := run(t, a...)
			if r.err != nil {
				t.Fatalf("generate: %v\n%s", r.err, r.stderr)
			}
			out := r.stdout
			if p != "" {
				if out != "" {
					t.Errorf("stdout %q, want nothing when writing a file", out)
				}
				if _, err := cdiapi.ReadSpec(p, 0); err != nil {
					t.Errorf("the CDI library rejects %s: %v", p, err)
				}
				if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o644 {
					t.Errorf("spec file %v, %v; want mode 0644", fi, err)
				}
				data, _ := os.ReadFile(p)
				out = string(data)
			}
			if isJSON := strings.HasPrefix(out, "{"); isJSON != tt.wantJSON {
				t.Errorf("JSON %v, want %v:\n%s", isJSON, tt.wantJSON, out)
			}
			s := parseSpec(t, out)
			kind := tt.wantKind
			if kind == "" {
				kind = "intel.com/gpu"
			}
			if s.Kind != kind || s.Version != "0.5.0" {
				t.Errorf("kind %q cdiVersion %q, want %q and 0.5.0", s.Kind, s.Version, kind)
			}
			if got := names(s); !slices.Equal(got, tt.wantNames) {
				t.Errorf("names %v, want %v", got, tt.wantNames)
			}
			if got := mounts(s); got != tt.wantMounts {
				t.Errorf("%d by-path mounts, want %d", got, tt.wantMounts)
			}
		})
	}
}

// oldSpec is a spec of our kind that a test puts at --output beforehand.
const oldSpec = `cdiVersion: 0.5.0
kind: intel.com/gpu
devices:
- name: card9
  containerEdits:
    deviceNodes:
    - path: /dev/dri/card9
      hostPath: /dev/dri/card9
`

func TestGenerateWithoutAReadyGPU(t *testing.T) {
	const notice = "no ready Intel GPU found; no CDI spec written"
	noNodes := func(n *fakenode.Node) error { return n.RemoveDevNodes("0000:00:02.0") }
	tests := []struct {
		name     string
		fixtures []func(*fakenode.Node) error
		existing string // content at --output beforehand; "" for no file
		stdout   bool   // generate to stdout instead of a file
		wantErr  string
		wantKept bool // the existing file must still be there, unchanged
	}{
		{name: "to stdout, nothing is printed and the notice goes to stderr", stdout: true},
		{name: "no file is created", fixtures: []func(*fakenode.Node) error{fakenode.IGPU, noNodes}},
		{name: "a stale spec of ours is removed", existing: oldSpec},
		{name: "a stale spec is removed when the only GPU is a PF with VFs bound elsewhere", existing: oldSpec,
			fixtures: []func(*fakenode.Node) error{func(n *fakenode.Node) error {
				if err := n.AddGPU(fakenode.GPU{Card: 0, PCI: "0000:03:00.0", TotalVFs: 1, NumVFs: 1}); err != nil {
					return err
				}
				return n.AddGPU(fakenode.GPU{Card: 1, PCI: "0000:03:00.1", PhysFn: "0000:03:00.0", Driver: "vfio-pci"})
			}}},
		{name: "another kind's spec is refused, not removed", existing: strings.Replace(oldSpec, "intel.com/gpu", "nvidia.com/gpu", 1),
			wantErr: `it holds a CDI spec of kind "nvidia.com/gpu", not "intel.com/gpu"`, wantKept: true},
		{name: "a file that is not a CDI spec is refused, not removed", existing: "# my notes\n- one\n",
			wantErr: `it is not a CDI spec`, wantKept: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := node(t, tt.fixtures...)
			p := filepath.Join(t.TempDir(), "intel.com-gpu.yaml")
			if tt.existing != "" {
				if err := os.WriteFile(p, []byte(tt.existing), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			a := args([]string{"generate"}, roots(n))
			if !tt.stdout {
				a = append(a, "--output", p)
			}
			r := run(t, a...)
			switch {
			case tt.wantErr == "" && r.err != nil:
				t.Fatalf("generate: %v (want success, exit 0)\n%s", r.err, r.stderr)
			case tt.wantErr != "" && (r.err == nil || !strings.Contains(r.err.Error(), tt.wantErr)):
				t.Fatalf("error %v, want one containing %q", r.err, tt.wantErr)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
			// A refused --output is refused before the node is read.
			if tt.wantErr == "" && !strings.Contains(r.stderr, notice) {
				t.Errorf("stderr %q lacks %q", r.stderr, notice)
			}
			if tt.wantErr != "" && r.code != 1 {
				t.Errorf("exit %d, want 1", r.code)
			}
			data, err := os.ReadFile(p)
			switch {
			case tt.wantKept && string(data) != tt.existing:
				t.Errorf("the file at --output changed to %q (%v)", data, err)
			case !tt.wantKept && err == nil:
				t.Errorf("a file is at --output: %q", data)
			}
		})
	}
}

func TestGenerateErrorsLeaveTheOutputAlone(t *testing.T) {
	tests := []struct {
		name    string
		flags   []string
		output  func(t *testing.T, dir, existing string) string
		wantErr string
	}{
		{name: "an unknown --format", flags: []string{"--format", "toml"}, wantErr: `invalid spec format "toml"`},
		{name: "a --vendor CDI refuses", flags: []string{"--vendor", "1ntel.com"}, wantErr: `vendor "1ntel.com"`},
		{name: "a --class CDI refuses", flags: []string{"--class", "gpu/0"}, wantErr: `class "gpu/0"`},
		{name: "an unknown --by-path mode", flags: []string{"--by-path", "all"}, wantErr: `invalid by-path mode "all"`},
		{name: "an unknown --log-level", flags: []string{"--log-level", "loud"}, wantErr: `invalid level "loud"`},
		{name: "an unknown --log-format", flags: []string{"--log-format", "xml"}, wantErr: `invalid format "xml"`},
		{name: "an output below a regular file cannot be written",
			output:  func(_ *testing.T, _, existing string) string { return filepath.Join(existing, "intel.com-gpu.yaml") },
			wantErr: "not a directory"},
		{name: "an output that is a directory cannot be replaced",
			output: func(t *testing.T, dir, _ string) string {
				p := filepath.Join(dir, "taken.yaml")
				must(t, os.Mkdir(p, 0o755))
				return p
			},
			wantErr: "it is a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name+" fails and changes no file", func(t *testing.T) {
			n := node(t, fakenode.IGPU)
			dir := t.TempDir()
			existing := filepath.Join(dir, "intel.com-gpu.yaml")
			if err := os.WriteFile(existing, []byte(oldSpec), 0o600); err != nil {
				t.Fatal(err)
			}
			out := existing
			if tt.output != nil {
				out = tt.output(t, dir, existing)
			}
			r := run(t, args([]string{"generate"}, roots(n), tt.flags, []string{"--output", out})...)
			if r.err == nil || !strings.Contains(r.err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", r.err, tt.wantErr)
			}
			if data, _ := os.ReadFile(existing); string(data) != oldSpec {
				t.Errorf("the existing spec changed to %q", data)
			}
			if fi, _ := os.Stat(existing); fi.Mode().Perm() != 0o600 {
				t.Errorf("the existing spec's mode changed to %v", fi.Mode())
			}
			if r.code != 1 {
				t.Errorf("exit %d, want 1 (a bad value, not a usage error)", r.code)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
			entries, _ := os.ReadDir(dir)
			if want := 1 + btoi(tt.output != nil && strings.HasSuffix(out, "taken.yaml")); len(entries) != want {
				t.Errorf("the directory holds %d entries, want %d", len(entries), want)
			}
		})
	}
}

func TestEnvironmentVariablesSetFlags(t *testing.T) {
	tests := []struct {
		name  string
		env   map[string]string // $OUT is replaced by a temp file path
		args  []string
		check func(t *testing.T, r result, out string)
	}{
		{
			name: "INTEL_GPU_CDI_SYSFS_ROOT and _DEV_ROOT choose the node",
			args: []string{"list"},
			check: func(t *testing.T, r result, _ string) {
				if !strings.Contains(r.stdout, "0000:00:02.0") {
					t.Errorf("list did not read the fake node:\n%s", r.stdout)
				}
			},
		},
		{
			name: "INTEL_GPU_CDI_LIST_FORMAT sets list's --format",
			env:  map[string]string{"INTEL_GPU_CDI_LIST_FORMAT": "json"},
			args: []string{"list"},
			check: func(t *testing.T, r result, _ string) {
				if !json.Valid([]byte(r.stdout)) {
					t.Errorf("not JSON:\n%s", r.stdout)
				}
			},
		},
		{
			name: "INTEL_GPU_CDI_OUTPUT sets --output",
			env:  map[string]string{"INTEL_GPU_CDI_OUTPUT": "$OUT"},
			args: []string{"generate"},
			check: func(t *testing.T, r result, out string) {
				if _, err := cdiapi.ReadSpec(out, 0); err != nil || r.stdout != "" {
					t.Errorf("no spec at INTEL_GPU_CDI_OUTPUT (%v); stdout %q", err, r.stdout)
				}
			},
		},
		{
			name: "INTEL_GPU_CDI_FORMAT sets generate's --format",
			env:  map[string]string{"INTEL_GPU_CDI_FORMAT": "json"},
			args: []string{"generate"},
			check: func(t *testing.T, r result, _ string) {
				if !json.Valid([]byte(r.stdout)) {
					t.Errorf("not JSON:\n%s", r.stdout)
				}
			},
		},
		{
			name: "a flag on the command line wins over its variable",
			env:  map[string]string{"INTEL_GPU_CDI_FORMAT": "json"},
			args: []string{"generate", "--format", "yaml"},
			check: func(t *testing.T, r result, _ string) {
				if !strings.HasPrefix(r.stdout, "cdiVersion:") {
					t.Errorf("not YAML:\n%s", r.stdout)
				}
			},
		},
		{
			name: "INTEL_GPU_CDI_VENDOR and _CLASS set the kind",
			env:  map[string]string{"INTEL_GPU_CDI_VENDOR": "example.com", "INTEL_GPU_CDI_CLASS": "igpu"},
			args: []string{"generate"},
			check: func(t *testing.T, r result, _ string) {
				if s := parseSpec(t, r.stdout); s.Kind != "example.com/igpu" {
					t.Errorf("kind %q, want example.com/igpu", s.Kind)
				}
			},
		},
		{
			name: "INTEL_GPU_CDI_BY_PATH sets --by-path",
			env:  map[string]string{"INTEL_GPU_CDI_BY_PATH": "none"},
			args: []string{"generate"},
			check: func(t *testing.T, r result, _ string) {
				if m := mounts(parseSpec(t, r.stdout)); m != 0 {
					t.Errorf("%d mounts, want none", m)
				}
			},
		},
		{
			name: "INTEL_GPU_CDI_LOG_LEVEL and _LOG_FORMAT shape the log",
			env:  map[string]string{"INTEL_GPU_CDI_LOG_LEVEL": "debug", "INTEL_GPU_CDI_LOG_FORMAT": "json", "INTEL_GPU_CDI_OUTPUT": "$OUT"},
			args: []string{"generate"},
			check: func(t *testing.T, r result, _ string) {
				if !strings.Contains(r.stderr, `"level":"DEBUG"`) || !strings.Contains(r.stderr, `"msg":"not an Intel GPU"`) {
					t.Errorf("stderr lacks JSON debug records:\n%s", r.stderr)
				}
			},
		},
		{
			name: "INTEL_GPU_CDI_VERBOSE logs at debug level",
			env:  map[string]string{"INTEL_GPU_CDI_VERBOSE": "true"},
			args: []string{"generate"},
			check: func(t *testing.T, r result, _ string) {
				if !strings.Contains(r.stderr, "level=DEBUG") {
					t.Errorf("stderr lacks debug records:\n%s", r.stderr)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := node(t, fakenode.IGPU, func(n *fakenode.Node) error { return n.AddSimpleDRM(5) })
			out := filepath.Join(t.TempDir(), "intel.com-gpu.yaml")
			t.Setenv("INTEL_GPU_CDI_SYSFS_ROOT", n.Sys)
			t.Setenv("INTEL_GPU_CDI_DEV_ROOT", n.Dev)
			for k, v := range tt.env {
				t.Setenv(k, strings.ReplaceAll(v, "$OUT", out))
			}
			r := run(t, tt.args...)
			if r.err != nil {
				t.Fatalf("%v: %v\n%s", tt.args, r.err, r.stderr)
			}
			tt.check(t, r, out)
		})
	}
	t.Run("a bad value in a variable is an error like a bad flag", func(t *testing.T) {
		n := node(t, fakenode.IGPU)
		t.Setenv("INTEL_GPU_CDI_BY_PATH", "every")
		if r := run(t, args([]string{"generate"}, roots(n))...); r.err == nil {
			t.Error("no error")
		}
	})
}

func TestEveryFlagHasItsEnvironmentVariable(t *testing.T) {
	// list's --format is INTEL_GPU_CDI_LIST_FORMAT: it takes table|json, and
	// sharing INTEL_GPU_CDI_FORMAT (json|yaml) with generate would make one
	// environment break the other command.
	exceptions := map[string]string{"list --format": "INTEL_GPU_CDI_LIST_FORMAT"}
	for _, cmd := range app.New().Commands {
		if cmd.Name != "list" && cmd.Name != "generate" {
			continue
		}
		for _, f := range cmd.Flags {
			name := f.Names()[0]
			t.Run(cmd.Name+" --"+name+" is read from its variable", func(t *testing.T) {
				want, ok := exceptions[cmd.Name+" --"+name]
				if !ok {
					want = app.EnvPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
				}
				df, ok := f.(cli.DocGenerationFlag)
				if !ok || !slices.Equal(df.GetEnvVars(), []string{want}) {
					t.Errorf("variables %v, want [%s]", df.GetEnvVars(), want)
				}
			})
		}
	}
}

func TestVersionPrintsTheBuildVersion(t *testing.T) {
	old := app.Version
	app.Version = "v1.2.3-test"
	t.Cleanup(func() { app.Version = old })
	r := run(t, "version")
	if r.err != nil || !strings.HasPrefix(r.stdout, "intel-gpu-cdi v1.2.3-test (go") {
		t.Errorf("version = %q, %v", r.stdout, r.err)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// countingWriter counts the Write calls it gets: each is a system call
// when the writer is the terminal or a pipe.
type countingWriter struct {
	bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

func TestListWritesItsTableInAFewWrites(t *testing.T) {
	n := node(t, func(n *fakenode.Node) error { return fakenode.Many(n, 64) })
	var stdout countingWriter
	var stderr bytes.Buffer
	if code := app.Main(context.Background(), args([]string{"intel-gpu-cdi", "list"}, roots(n)), &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if got := strings.Count(stdout.String(), "  ready\n"); got != 64 {
		t.Fatalf("%d ready rows, want 64:\n%s", got, stdout.String())
	}
	// tabwriter alone writes each cell and padding apart: 1,300 writes
	// for 64 GPUs. Buffered, the table costs one write per 4 KiB.
	if max := stdout.Len()/4096 + 2; stdout.writes > max {
		t.Errorf("list made %d writes for %d bytes, want at most %d", stdout.writes, stdout.Len(), max)
	}
}
