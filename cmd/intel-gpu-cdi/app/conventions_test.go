package app_test

import (
	"encoding/json"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cmd/intel-gpu-cdi/app"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/testenv"
)

func TestGlobalVersionFlag(t *testing.T) {
	old := app.Version
	app.Version = "v1.2.3-test"
	t.Cleanup(func() { app.Version = old })
	for _, a := range [][]string{{"--version"}, {"--version", "list"}, {"version"}} {
		r := run(t, a...)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "intel-gpu-cdi v1.2.3-test (go") {
			t.Errorf("%q: exit %d, stdout %q", a, r.code, r.stdout)
		}
	}
	t.Run("-v is --verbose, not --version", func(t *testing.T) {
		r := run(t, args([]string{"-v", "generate"}, roots(node(t, fakenode.IGPU, withSimpleDRM)))...)
		if r.code != 0 || !strings.Contains(r.stderr, "level=DEBUG") || strings.Contains(r.stdout, "v1.2.3-test") {
			t.Errorf("exit %d, stdout %.40q, stderr %q", r.code, r.stdout, r.stderr)
		}
	})
}

// withSimpleDRM adds a card that is not ours: a scan logs it at debug level.
func withSimpleDRM(n *fakenode.Node) error { return n.AddSimpleDRM(5) }

func TestCommonFlagsGoBeforeOrAfterTheCommand(t *testing.T) {
	n := node(t, fakenode.IGPU, withSimpleDRM)
	missing := filepath.Join(t.TempDir(), "missing")
	tests := []struct {
		name  string
		env   map[string]string
		args  []string
		check func(r result) bool
	}{
		{name: "the roots before the command",
			args:  []string{"--sysfs-root", n.Sys, "--dev-root", n.Dev, "list"},
			check: func(r result) bool { return r.code == 0 && strings.Contains(r.stdout, "0000:00:02.0") }},
		{name: "after the command wins over before",
			args:  []string{"--sysfs-root", missing, "list", "--sysfs-root", n.Sys, "--dev-root", n.Dev},
			check: func(r result) bool { return r.code == 0 && strings.Contains(r.stdout, "0000:00:02.0") }},
		{name: "before the command wins over the variable",
			env:   map[string]string{"INTEL_GPU_CDI_SYSFS_ROOT": missing},
			args:  []string{"--sysfs-root", n.Sys, "--dev-root", n.Dev, "list"},
			check: func(r result) bool { return r.code == 0 && strings.Contains(r.stdout, "0000:00:02.0") }},
		{name: "the variable when neither is given",
			env:   map[string]string{"INTEL_GPU_CDI_SYSFS_ROOT": missing},
			args:  []string{"--dev-root", n.Dev, "list"},
			check: func(r result) bool { return r.code == 1 && strings.Contains(r.stderr, missing) }},
		{name: "-v before the command",
			args:  []string{"-v", "generate", "--sysfs-root", n.Sys, "--dev-root", n.Dev},
			check: func(r result) bool { return r.code == 0 && strings.Contains(r.stderr, "level=DEBUG") }},
		{name: "--log-format before, --log-level after",
			args: []string{"--log-format", "json", "generate", "--log-level", "debug", "--sysfs-root", n.Sys, "--dev-root", n.Dev},
			check: func(r result) bool {
				return r.code == 0 && strings.Contains(r.stderr, `"level":"DEBUG"`)
			}},
		{name: "--log-level after wins",
			args:  []string{"--log-level", "debug", "generate", "--log-level", "error", "--sysfs-root", n.Sys, "--dev-root", n.Dev},
			check: func(r result) bool { return r.code == 0 && r.stderr == "" }},
		{name: "the plugin takes them before the command too",
			args: []string{"--log-level", "loud", "plugin"},
			check: func(r result) bool {
				return r.code == 1 && strings.Contains(r.stderr, `--log-level: invalid level "loud"`)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			if r := run(t, tt.args...); !tt.check(r) {
				t.Errorf("%q: exit %d\nstdout %s\nstderr %s", tt.args, r.code, r.stdout, r.stderr)
			}
		})
	}
}

// TestUsageErrors checks that a command line the app cannot parse exits 2
// with the message and a hint on stderr and nothing on stdout.
func TestUsageErrors(t *testing.T) {
	n := node(t, fakenode.IGPU)
	tests := []struct {
		args []string
		env  map[string]string
		want string // on stderr, before the hint
		hint string
	}{
		{args: []string{"generate", "--bogus"}, want: "intel-gpu-cdi generate: unknown flag --bogus", hint: "intel-gpu-cdi generate --help"},
		{args: []string{"--bogus", "list"}, want: "intel-gpu-cdi: unknown flag --bogus", hint: "intel-gpu-cdi --help"},
		{args: []string{"generate", "-o"}, want: "intel-gpu-cdi generate: flag -o needs a value", hint: "intel-gpu-cdi generate --help"},
		{args: []string{"plugin", "--shared-dev-num", "two"}, want: `intel-gpu-cdi plugin: invalid value "two" for flag --shared-dev-num`, hint: "intel-gpu-cdi plugin --help"},
		{args: []string{"list", "--verbose=maybe"}, want: `intel-gpu-cdi list: invalid boolean value "maybe" for --verbose`, hint: "intel-gpu-cdi list --help"},
		{args: []string{"list"}, env: map[string]string{"INTEL_GPU_CDI_VERBOSE": "maybe"},
			want: `could not parse "maybe" as bool value from environment variable "INTEL_GPU_CDI_VERBOSE"`, hint: "--help"},
		{args: []string{"bogus"}, want: `intel-gpu-cdi: unknown command "bogus"`, hint: "intel-gpu-cdi --help"},
		{args: []string{"list", "extra"}, want: `intel-gpu-cdi list: unexpected argument "extra": list takes only flags`, hint: "intel-gpu-cdi list --help"},
		{args: []string{"generate", "help"}, want: `intel-gpu-cdi generate: unexpected argument "help"`, hint: "intel-gpu-cdi generate --help"},
		{args: []string{"generate", "--", "-o", "x.yaml"}, want: `intel-gpu-cdi generate: unexpected argument "-o"`, hint: "intel-gpu-cdi generate --help"},
		{args: []string{"plugin", "now"}, want: `intel-gpu-cdi plugin: unexpected argument "now"`, hint: "intel-gpu-cdi plugin --help"},
		{args: []string{"version", "2"}, want: `intel-gpu-cdi version: unexpected argument "2"`, hint: "intel-gpu-cdi version --help"},
		{args: []string{"help", "bogus"}, want: "No help topic for 'bogus'", hint: "intel-gpu-cdi --help"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			// The roots go first: global flags, which also keeps them out
			// of the way of a flag missing its value at the end.
			r := run(t, args(roots(n), tt.args)...)
			hint := "Run '" + tt.hint + "' for usage.\n"
			if tt.hint == "--help" {
				hint = "--help' for usage.\n"
			}
			if r.code != app.ExitUsage || r.stdout != "" || !strings.Contains(r.stderr, tt.want) || !strings.HasSuffix(r.stderr, hint) {
				t.Errorf("exit %d\nstdout %q\nstderr %q\nwant exit 2, nothing on stdout, stderr with %q ending %q", r.code, r.stdout, r.stderr, tt.want, hint)
			}
		})
	}
	t.Run("generate --bogus > spec.yaml leaves the file empty (the binary)", func(t *testing.T) {
		bin := buildBinary(t)
		out := filepath.Join(t.TempDir(), "spec.yaml")
		f, err := os.Create(out)
		must(t, err)
		defer f.Close()
		cmd := exec.Command(bin, "generate", "--bogus")
		cmd.Stdout = f
		stderr, err := cmd.StderrPipe()
		must(t, err)
		must(t, cmd.Start())
		msg, _ := io.ReadAll(stderr)
		cmd.Wait()
		if code := cmd.ProcessState.ExitCode(); code != 2 {
			t.Errorf("exit %d, want 2", code)
		}
		if data, _ := os.ReadFile(out); len(data) != 0 {
			t.Errorf("stdout got %q", data)
		}
		if !strings.HasPrefix(string(msg), "intel-gpu-cdi generate: unknown flag --bogus\n") {
			t.Errorf("stderr %q", msg)
		}
	})
}

// TestAnEmptyVariableIsUnset sets the variable of every flag of every
// command to "" and checks that each flag then holds its default, as if
// the variable were not there.
func TestAnEmptyVariableIsUnset(t *testing.T) {
	defaults := flagValues(t)
	for _, e := range allEnv() {
		t.Setenv(e, "")
	}
	got := flagValues(t)
	if len(got) < 25 {
		t.Fatalf("only %d flags seen: %v", len(got), got)
	}
	for name, def := range defaults {
		if got[name] != def {
			t.Errorf("%s = %q with its variable empty, want the default %q", name, got[name], def)
		}
	}

	t.Run("list and generate run as without the variables", func(t *testing.T) {
		n := node(t, fakenode.IGPU)
		for _, a := range [][]string{{"generate"}, {"list"}, {"list", "--format", "json"}} {
			r := run(t, args(a, roots(n))...)
			if r.code != 0 {
				t.Fatalf("%q: %v", a, r.err)
			}
			if a[0] == "generate" {
				parseSpec(t, r.stdout)
			}
		}
	})
}

// flagValues applies every flag of the app and of each command to a fresh
// flag set, as a run does, and returns the values by "command --flag".
func flagValues(t *testing.T) map[string]string {
	t.Helper()
	a := app.New()
	out := map[string]string{}
	apply := func(prefix string, flags []cli.Flag) {
		set := flag.NewFlagSet(prefix, flag.ContinueOnError)
		set.SetOutput(io.Discard)
		for _, f := range flags {
			if err := f.Apply(set); err != nil {
				t.Fatalf("%s --%s: %v", prefix, f.Names()[0], err)
			}
		}
		set.VisitAll(func(f *flag.Flag) { out[prefix+" --"+f.Name] = f.Value.String() })
	}
	apply("intel-gpu-cdi", a.Flags)
	for _, c := range a.Commands {
		apply(c.Name, c.Flags)
	}
	return out
}

func allEnv() []string {
	var out []string
	a := app.New()
	for _, flags := range append([][]cli.Flag{a.Flags}, commandFlags(a)...) {
		for _, f := range flags {
			if d, ok := f.(cli.DocGenerationFlag); ok {
				out = append(out, d.GetEnvVars()...)
			}
		}
	}
	return out
}

func commandFlags(a *cli.App) [][]cli.Flag {
	var out [][]cli.Flag
	for _, c := range a.Commands {
		out = append(out, c.Flags)
	}
	return out
}

func TestListShowsTheCDINamesToAskFor(t *testing.T) {
	n := node(t, fakenode.SRIOV)
	t.Run("the table", func(t *testing.T) {
		r := run(t, args([]string{"list"}, roots(n))...)
		if r.code != 0 {
			t.Fatal(r.err)
		}
		for _, want := range []*regexp.Regexp{
			regexp.MustCompile(`(?m)^NAME .* CDI NAMES +HEALTH +STATUS$`),
			regexp.MustCompile(`(?m)^card1 .* - +- +not handed out: physical function`),
			regexp.MustCompile(`(?m)^card2 .* intel\.com/gpu=card2 intel\.com/gpu=0000:03:00\.1 +healthy +ready$`),
			regexp.MustCompile(`(?m)^intel\.com/gpu=all: every ready GPU above$`),
		} {
			if !want.MatchString(r.stdout) {
				t.Errorf("no line matching %s in\n%s", want, r.stdout)
			}
		}
	})
	t.Run("--vendor and --class name them as generate would", func(t *testing.T) {
		r := run(t, args([]string{"list", "--vendor", "example.com", "--class", "igpu"}, roots(n))...)
		if r.code != 0 || !strings.Contains(r.stdout, "example.com/igpu=card2 example.com/igpu=0000:03:00.1") {
			t.Errorf("exit %d\n%s", r.code, r.stdout)
		}
	})
	t.Run("JSON", func(t *testing.T) {
		r := run(t, args([]string{"list", "--format", "json"}, roots(n))...)
		var out struct {
			Devices []struct {
				Card      string
				HandedOut bool
				CDINames  []string
			}
		}
		must(t, json.Unmarshal([]byte(r.stdout), &out))
		got := map[string]string{}
		for _, d := range out.Devices {
			got[d.Card] = strings.Join(d.CDINames, " ")
		}
		if got["card1"] != "" || got["card2"] != "intel.com/gpu=card2 intel.com/gpu=0000:03:00.1" {
			t.Errorf("cdiNames %v", got)
		}
	})
}

// TestListJSONIsAStableContract compares `list --format json` with golden
// files: its field names and shapes are what scripts read, and change only
// when a golden file is rewritten on purpose (go test -args -update).
// Empty lists are [], never null.
func TestListJSONIsAStableContract(t *testing.T) {
	for _, tt := range []struct {
		golden  string
		fixture func(*fakenode.Node) error
	}{
		{"list-sriov.json", fakenode.SRIOV},
		{"list-tricky.json", fakenode.Tricky},
		{"list-empty.json", func(*fakenode.Node) error { return nil }},
	} {
		t.Run(tt.golden, func(t *testing.T) {
			n := node(t, tt.fixture)
			r := run(t, args([]string{"list", "--format", "json"}, roots(n))...)
			if r.code != 0 {
				t.Fatal(r.err)
			}
			got := strings.ReplaceAll(r.stdout, filepath.Dir(n.Sys), "$NODE")
			if strings.Contains(got, "null") {
				t.Errorf("null in the output:\n%s", got)
			}
			p := filepath.Join("testdata", tt.golden)
			if *testenv.Update {
				must(t, os.WriteFile(p, []byte(got), 0o644))
			}
			want, err := os.ReadFile(p)
			must(t, err)
			if got != string(want) {
				t.Errorf("list --format json differs from %s (go test -args -update rewrites it):\n%s", p, got)
			}
		})
	}
}

// urfave/cli asks every flag of a command for its names once per flag it
// looks up; the wrapped flags answer from a copy made once, so the answer
// must be the same slice every time, and still the flag's own names.
func TestFlagNamesAreWorkedOutOnce(t *testing.T) {
	a := app.New()
	seen := 0
	for _, flags := range append([][]cli.Flag{a.Flags}, commandFlags(a)...) {
		for _, f := range flags {
			first, second := f.Names(), f.Names()
			if len(first) == 0 || first[0] == "" {
				t.Fatalf("a flag without a name: %#v", f)
			}
			if _, wrapped := f.(cli.DocGenerationFlag); !wrapped {
				continue
			}
			seen++
			if &first[0] != &second[0] {
				t.Errorf("--%s: Names built a new slice on the second call", first[0])
			}
			for _, n := range first {
				if strings.ContainsAny(n, ", ") {
					t.Errorf("--%s: name %q", first[0], n)
				}
			}
		}
	}
	if seen < 25 {
		t.Errorf("only %d flags checked", seen)
	}
	for _, f := range a.Flags {
		if f.Names()[0] == "verbose" && strings.Join(f.Names(), ",") != "verbose,v" {
			t.Errorf("--verbose has names %q, want verbose and its alias v", f.Names())
		}
	}
}
