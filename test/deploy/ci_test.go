package deploy_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestCIMeansWhatItMeansInTheProduct runs a check whose tool is missing
// in a child process under several CI values: it skips where the
// product's testenv says this is not CI (CI=false, 0, empty) and fails
// where it is, so that no module reads CI its own way.
func TestCIMeansWhatItMeansInTheProduct(t *testing.T) {
	const name = "TestCIMeansWhatItMeansInTheProduct"
	if os.Getenv("DEPLOY_TEST_CHILD") == "1" {
		lookTool(t, "intel-gpu-cdi-no-such-tool", "nothing installs it")
		return
	}
	for _, tt := range []struct{ ci, want string }{
		{"false", "--- SKIP: " + name}, {"0", "--- SKIP: " + name}, {"", "--- SKIP: " + name},
		{"true", "--- FAIL: " + name},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^"+name+"$", "-test.v")
		cmd.Env = append(os.Environ(), "CI="+tt.ci, "DEPLOY_TEST_CHILD=1")
		out, _ := cmd.CombinedOutput()
		if !strings.Contains(string(out), tt.want) {
			t.Errorf("CI=%q: want %q in\n%s", tt.ci, tt.want, out)
		}
	}
}
