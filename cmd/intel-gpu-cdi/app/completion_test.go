package app_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cmd/intel-gpu-cdi/app"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

func TestCompleteOffersCommandsFlagsAndFixedValues(t *testing.T) {
	tests := []struct {
		name  string
		words []string // after __complete; the last is the word being completed
		want  []string
	}{
		{"the commands at the top", []string{""}, []string{"list", "generate", "plugin", "version", "completion", "help"}},
		{"a command by its start", []string{"g"}, []string{"generate"}},
		{"the global flags before a command", []string{"--v"}, []string{"--verbose", "--version"}},
		{"a command after global flags", []string{"--log-level", "debug", "-v", "l"}, []string{"list"}},
		{"generate's flags", []string{"generate", "--o"}, []string{"--output"}},
		{"generate's formats", []string{"generate", "--format", ""}, []string{"json", "yaml"}},
		{"list's formats", []string{"list", "--format", ""}, []string{"table", "json"}},
		{"a value after --flag=", []string{"generate", "--format=y"}, []string{"--format=yaml"}},
		{"--by-path", []string{"plugin", "--by-path", ""}, []string{"single", "none"}},
		{"--allocation-policy", []string{"plugin", "--allocation-policy", ""}, []string{"none", "balanced", "packed"}},
		{"--device-list-strategy, first", []string{"plugin", "--device-list-strategy", ""}, []string{"cdi-cri", "cdi-annotations", "device-specs"}},
		{"--device-list-strategy, after a comma", []string{"plugin", "--device-list-strategy", "cdi-cri,"}, []string{"cdi-cri,cdi-annotations", "cdi-cri,device-specs"}},
		{"--log-level before the command", []string{"--log-level", ""}, []string{"debug", "info", "warn", "error"}},
		{"--log-format after it", []string{"list", "--log-format", ""}, []string{"text", "json"}},
		{"a file name is left to the shell", []string{"generate", "--output", ""}, []string{}},
		{"a free-form value is left to the shell", []string{"plugin", "--shared-dev-num", ""}, []string{}},
		{"the completion shells", []string{"completion", ""}, []string{"bash", "zsh", "fish"}},
		{"help's topics", []string{"help", "p"}, []string{"plugin"}},
		{"nothing after --", []string{"generate", "--", ""}, []string{}},
		{"no argument for a command that takes none", []string{"list", ""}, []string{}},
		{"not the hidden command", []string{"__"}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, append([]string{"__complete"}, tt.words...)...)
			if r.err != nil {
				t.Fatal(r.err)
			}
			got := strings.Fields(r.stdout)
			if got == nil {
				got = []string{}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("__complete %q = %q, want %q", tt.words, got, tt.want)
			}
		})
	}
}

// TestEveryCompletedValueIsAccepted runs each command with each value the
// completion offers for its fixed-set flags: a candidate the command then
// refuses would be worse than none.
func TestEveryCompletedValueIsAccepted(t *testing.T) {
	n := node(t, fakenode.IGPU)
	for _, tt := range []struct {
		command string
		flag    string
		extra   []string
	}{
		{"list", "--format", nil},
		{"list", "--log-level", nil},
		{"list", "--log-format", nil},
		{"generate", "--format", nil},
		{"generate", "--by-path", nil},
	} {
		r := run(t, "__complete", tt.command, tt.flag, "")
		values := strings.Fields(r.stdout)
		if len(values) < 2 {
			t.Fatalf("%s %s: candidates %q", tt.command, tt.flag, values)
		}
		for _, v := range values {
			t.Run(tt.command+" "+tt.flag+" "+v, func(t *testing.T) {
				if r := run(t, args([]string{tt.command, tt.flag, v}, roots(n), tt.extra)...); r.err != nil {
					t.Error(r.err)
				}
			})
		}
	}
}

// neverRun lists command lines a shell may hand over while the user is
// still typing. Each names a spec file, a socket dir and a spec dir that
// must not appear: the command must not run.
func neverRun(n *fakenode.Node, out, sockDir, specDir string) [][]string {
	node := []string{"--sysfs-root", n.Sys, "--dev-root", n.Dev}
	gen := slices.Concat([]string{"generate"}, node, []string{"-o", out})
	plugin := slices.Concat([]string{"plugin"}, node, []string{"--kubelet-socket-dir", sockDir, "--cdi-spec-dir", specDir})
	var lines [][]string
	for _, cmd := range [][]string{gen, plugin, slices.Concat([]string{"list"}, node), {"version"}, {"completion"}} {
		lines = append(lines,
			// The protocol of the scripts: the current word last.
			slices.Concat([]string{"__complete"}, cmd, []string{""}),
			slices.Concat([]string{"__complete"}, cmd, []string{"--"}),
			slices.Concat([]string{"__complete"}, cmd, []string{"--", ""}),
			slices.Concat([]string{"__complete"}, cmd, []string{"--fo"}),
			// urfave/cli's protocol, which an old script still speaks: it
			// ran the command after "--" and on partial flags.
			slices.Concat(cmd, []string{"--generate-bash-completion"}),
			slices.Concat(cmd, []string{"--", "--generate-bash-completion"}),
			slices.Concat(cmd, []string{"--fo", "--generate-bash-completion"}),
			slices.Concat(cmd, []string{"-o", "--generate-bash-completion"}),
		)
	}
	return lines
}

// TestCompletionNeverRunsTheCommand hands every such line to the app in
// process and to the built binary, each with its own directory, and checks
// that nothing appeared there.
func TestCompletionNeverRunsTheCommand(t *testing.T) {
	n := node(t, fakenode.IGPU)
	bin := buildBinary(t)
	for _, how := range []struct {
		name string
		run  func(t *testing.T, ctx context.Context, args []string) int
	}{
		{"in process", func(t *testing.T, ctx context.Context, args []string) int {
			return runContext(t, ctx, args...).code
		}},
		{"the binary", func(t *testing.T, ctx context.Context, args []string) int {
			cmd := exec.CommandContext(ctx, bin, args...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if err != nil && !errors.As(err, &exit) {
				t.Fatal(err)
			}
			return cmd.ProcessState.ExitCode()
		}},
	} {
		t.Run(how.name, func(t *testing.T) {
			dir := shortDir(t)
			out, sockDir, specDir := filepath.Join(dir, "x.yaml"), filepath.Join(dir, "k"), filepath.Join(dir, "c")
			for _, line := range neverRun(n, out, sockDir, specDir) {
				// A command that runs despite all is stopped, and then found out.
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				code := how.run(t, ctx, line)
				cancel()
				if line[0] == "__complete" && code != 0 {
					t.Errorf("%q: exit %d, want 0", line, code)
				}
				// Refused as an unknown flag, an unexpected argument or
				// (-o --generate-bash-completion) an output without .json
				// or .yaml.
				if line[0] != "__complete" && code == 0 {
					t.Errorf("%q: exit 0, want a refusal", line)
				}
				if entries, _ := os.ReadDir(dir); len(entries) > 0 {
					t.Fatalf("%q ran the command: %s holds %v", line, dir, entries)
				}
			}
		})
	}
}

// shortDir is a temp dir short enough for unix socket paths in it.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "c")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func TestCompletionScripts(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		t.Run(shell+"'s script ends with a newline and names the hidden command", func(t *testing.T) {
			r := run(t, "completion", shell)
			if r.err != nil {
				t.Fatal(r.err)
			}
			if !strings.HasSuffix(r.stdout, "\n") || strings.HasSuffix(r.stdout, "\n\n") {
				t.Errorf("script does not end with exactly one newline: %q", r.stdout[max(0, len(r.stdout)-40):])
			}
			if !strings.Contains(r.stdout, "intel-gpu-cdi") || !strings.Contains(r.stdout, " __complete ") {
				t.Errorf("script does not ask the binary for candidates:\n%s", r.stdout)
			}
		})
	}
	for _, bad := range [][]string{{}, {"powershell"}, {"bash", "zsh"}} {
		t.Run("completion "+strings.Join(bad, " ")+" is a usage error", func(t *testing.T) {
			r := run(t, append([]string{"completion"}, bad...)...)
			if r.code != app.ExitUsage || r.stdout != "" || !strings.Contains(r.stderr, "bash, zsh, fish") {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit 2 naming the shells, nothing on stdout", r.code, r.stdout, r.stderr)
			}
		})
	}
}
