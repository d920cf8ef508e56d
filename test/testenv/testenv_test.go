package testenv_test

import (
	"os"
	"os/exec"
	"path/filepath"
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

// A fake kubelet's directory has a parent of its own, which the plugin
// watches, and a path a socket in it can have.
func TestSocketDirHasAParentOfItsOwn(t *testing.T) {
	var dir string
	t.Run("made", func(t *testing.T) {
		dir = testenv.SocketDir(t)
		fi, err := os.Stat(dir)
		if err != nil || !fi.IsDir() {
			t.Fatalf("%s: not a directory (%v)", dir, err)
		}
		parent := filepath.Dir(dir)
		if parent == filepath.Clean(os.TempDir()) {
			t.Fatalf("%s is directly in the temporary directory", dir)
		}
		entries, err := os.ReadDir(parent)
		if err != nil || len(entries) != 1 {
			t.Fatalf("parent %s holds %d entries (%v), want only %s", parent, len(entries), err, dir)
		}
		// kubelet.sock and the plugins' sockets, such as
		// intel-gpu-cdi-i915.sock, must fit in sun_path.
		if n := len(filepath.Join(dir, "intel-gpu-cdi-i915.sock")); n >= 108 {
			t.Fatalf("a socket path in %s is %d bytes, more than a unix socket takes", dir, n)
		}
	})
	if _, err := os.Stat(filepath.Dir(dir)); !os.IsNotExist(err) {
		t.Errorf("%s is still there after the test (%v)", filepath.Dir(dir), err)
	}
}
