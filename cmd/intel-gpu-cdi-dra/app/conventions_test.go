package app_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	draapp "github.com/intel-gpu-cdi/intel-gpu-cdi/cmd/intel-gpu-cdi-dra/app"
	cdiapp "github.com/intel-gpu-cdi/intel-gpu-cdi/cmd/intel-gpu-cdi/app"
)

// runMain runs the binary's command line as main does: exit status and
// what went to each stream.
func runMain(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := cdiapp.Run(context.Background(), draapp.New(), append([]string{draapp.Name}, args...), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// The DRA driver's binary follows intel-gpu-cdi's command line
// conventions: a usage error is exit 2 with the message and a hint on
// stderr and nothing on stdout; an argument is a usage error; --version is
// global; an empty variable is no setting.
func TestTheDRABinaryFollowsTheCommandLineConventions(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		says string
	}{
		{"an unknown flag", []string{"--bogus"}, "unknown flag --bogus"},
		{"a flag without its value", []string{"--node-name"}, "flag --node-name needs a value"},
		{"a value of the wrong type", []string{"--kube-api-burst", "many"}, "--kube-api-burst"},
		{"an argument", []string{"extra"}, `unexpected argument "extra"`},
	} {
		t.Run(tc.name+" is a usage error", func(t *testing.T) {
			code, stdout, stderr := runMain(t, tc.args...)
			if code != cdiapp.ExitUsage || stdout != "" || !strings.Contains(stderr, tc.says) || !strings.Contains(stderr, "Run 'intel-gpu-cdi-dra") {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit 2, nothing on stdout, %q and the hint on stderr", code, stdout, stderr, tc.says)
			}
		})
	}
	t.Run("--version prints the version", func(t *testing.T) {
		code, stdout, _ := runMain(t, "--version")
		if code != cdiapp.ExitOK || !strings.HasPrefix(stdout, "intel-gpu-cdi-dra ") {
			t.Errorf("exit %d, stdout %q", code, stdout)
		}
	})
	t.Run("an empty variable is no setting", func(t *testing.T) {
		for _, f := range draapp.New().Flags {
			t.Setenv(cdiapp.EnvPrefix+strings.ToUpper(strings.ReplaceAll(f.Names()[0], "-", "_")), "")
		}
		// With every variable empty, the defaults hold: the first error is
		// the one a default gives on this machine, never a parse error of "".
		code, _, stderr := runMain(t, "--sysfs-root", "/nonexistent")
		if code != cdiapp.ExitFailure || !strings.Contains(stderr, "--sysfs-root") {
			t.Errorf("exit %d, stderr %q: an empty variable was taken as a value", code, stderr)
		}
	})
}
