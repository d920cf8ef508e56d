package testenv_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/testenv"
)

func TestInCI(t *testing.T) {
	for _, tt := range []struct {
		value string
		set   bool
		want  bool
	}{
		{set: false, want: false},
		{value: "", set: true, want: false},
		{value: "0", set: true, want: false},
		{value: "false", set: true, want: false},
		{value: "FALSE", set: true, want: false},
		{value: "true", set: true, want: true},
		{value: "1", set: true, want: true},
		{value: "yes", set: true, want: true},
	} {
		name := "CI unset"
		if tt.set {
			name = "CI=" + tt.value
		}
		t.Run(name, func(t *testing.T) {
			t.Setenv("CI", tt.value)
			if !tt.set {
				os.Unsetenv("CI")
			}
			if got := testenv.InCI(); got != tt.want {
				t.Errorf("InCI() = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestUnavailableSkipsOutsideCIAndFailsInIt runs a test that lacks what
// it needs in a child process, under each CI value.
func TestUnavailableSkipsOutsideCIAndFailsInIt(t *testing.T) {
	if os.Getenv("TESTENV_CHILD") == "1" {
		testenv.Unavailable(t, "the thing this test needs is missing")
		return
	}
	checkChild(t, "TestUnavailableSkipsOutsideCIAndFailsInIt", "TESTENV_CHILD=1")
}

// checkChild runs the test named run of this test binary with env added,
// once per CI value, and checks it skipped or failed as InCI says.
func checkChild(t *testing.T, run string, env ...string) {
	t.Helper()
	for _, tt := range []struct{ ci, want string }{
		{"false", "--- SKIP: " + run}, {"0", "--- SKIP: " + run}, {"", "--- SKIP: " + run},
		{"true", "--- FAIL: " + run},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^"+run+"$", "-test.v")
		cmd.Env = append(append(os.Environ(), "CI="+tt.ci), env...)
		out, _ := cmd.CombinedOutput()
		if !strings.Contains(string(out), tt.want) {
			t.Errorf("CI=%q: want %q in\n%s", tt.ci, tt.want, out)
		}
	}
}
