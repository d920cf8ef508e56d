package reliability_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cmd/intel-gpu-cdi/app"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/testenv"
)

// badFlags lists, for every flag of `intel-gpu-cdi plugin`, values that
// must stop start-up with an error that names the flag. A value is what
// follows --flag= on the command line; env sets the flag's environment
// variable instead.
var badFlags = []struct {
	flag   string
	values []string
	env    []string
	// names, when set, is what the error must name instead of the flag.
	names []string
}{
	{flag: "sysfs-root", values: []string{"", "/nonexistent/sys", "@file"}},
	{flag: "dev-root", values: []string{"", "/nonexistent/dev", "@file"}},
	{flag: "log-level", values: []string{"", "loud", "debug2"}},
	{flag: "log-format", values: []string{"", "xml"}},
	{flag: "verbose", values: []string{"maybe"}, env: []string{"sometimes"}},
	{flag: "vendor", values: []string{"", "Intel Corp", "intel.com/x", "-intel.com"}},
	{flag: "class", values: []string{"", "g/pu", "gpu!"}},
	{flag: "by-path", values: []string{"", "all", "Single"}},
	{flag: "kubelet-socket-dir", values: []string{"", "@file", "/" + strings.Repeat("k", 100), "relative/device-plugins"}},
	{flag: "kubelet-registrar-dir", values: []string{"@file", "relative/plugins_registry"}},
	{flag: "cdi-spec-dir", values: []string{"", "@file"}},
	{flag: "shared-dev-num", values: []string{"0", "-1", "1025", "two", ""}, env: []string{"0"}},
	{flag: "allocation-policy", values: []string{"", "random", "Packed"}},
	{flag: "device-list-strategy", values: []string{"", "cdi", "cdi-cri,", "cdi-cri,envvar"}},
	{flag: "enable-monitoring", values: []string{"perhaps"}, env: []string{"perhaps"}},
	{flag: "allow-ids", values: []string{"0x56a", "zz", "0x56a0,", "0x56a0,,0x46a6", "0x56a0x"}},
	{flag: "deny-ids", values: []string{"0x56a00", "gpu"}},
	{flag: "resync-period", values: []string{"-1s", "soon", "", "1ns", "10ms"}, env: []string{"-5m"}},
	{flag: "metrics-address", values: []string{"not an address", ":99999", "256.0.0.1:9400"}},
	{flag: "probe-address", values: []string{"not an address", ":99999", "256.0.0.1:8081"}},
	{flag: "nfd-features-dir", values: []string{"@file/features.d"}},
	{flag: "health-sources", values: []string{"bogus", "uevent,wedges", "all;"}},
	{flag: "health-state-file", values: []string{"@file/health.json", "@file"}},
	{flag: "health-fatal-aer", values: []string{"-1", "many"}},
	{flag: "health-nonfatal-aer", values: []string{"-1", "1.5"}},
	{flag: "health-hangs", values: []string{"-1", "x"}},
}

// TestEveryFlagRejectsBadValuesAtStartUp runs `intel-gpu-cdi plugin`
// in-process on a fake node with each bad value in turn: it must return an
// error naming the flag at once, before it registers or writes anything,
// rather than start and fail later or retry for ever.
func TestEveryFlagRejectsBadValuesAtStartUp(t *testing.T) {
	n := fakenode.NewT(t)
	n.MustApply(t, fakenode.IGPU)
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("the table covers every flag of the plugin command", func(t *testing.T) {
		var names []string
		for _, cmd := range app.New().Commands {
			if cmd.Name != "plugin" {
				continue
			}
			for _, f := range cmd.Flags {
				names = append(names, f.Names()[0])
			}
		}
		if len(names) == 0 {
			t.Fatal("no plugin command")
		}
		for _, name := range names {
			if !slices.ContainsFunc(badFlags, func(b struct {
				flag   string
				values []string
				env    []string
				names  []string
			}) bool {
				return b.flag == name
			}) {
				t.Errorf("--%s has no bad values in the table", name)
			}
		}
	})

	for _, bf := range badFlags {
		type try struct{ name, arg, env string }
		var tries []try
		for _, v := range bf.values {
			v = strings.ReplaceAll(v, "@file", file)
			tries = append(tries, try{name: "--" + bf.flag + "=" + v, arg: "--" + bf.flag + "=" + v})
		}
		for _, v := range bf.env {
			env := app.EnvPrefix + strings.ToUpper(strings.ReplaceAll(bf.flag, "-", "_"))
			tries = append(tries, try{name: env + "=" + v, env: env + "=" + v})
		}
		for _, tr := range tries {
			t.Run(tr.name, func(t *testing.T) {
				specDir := filepath.Join(t.TempDir(), "cdi")
				sockDir := testenv.SocketDir(t)
				args := []string{"intel-gpu-cdi", "plugin",
					"--sysfs-root", n.Sys, "--dev-root", n.Dev,
					"--kubelet-socket-dir", sockDir, "--cdi-spec-dir", specDir,
					"--log-level", "error",
				}
				if tr.arg != "" {
					args = append(args, tr.arg)
				}
				if tr.env != "" {
					k, v, _ := strings.Cut(tr.env, "=")
					t.Setenv(k, v)
				}
				err, stderr := runApp(t, args)
				if err == nil {
					t.Fatalf("plugin started with %s; log:\n%s", tr.name, stderr)
				}
				want := append([]string{bf.flag}, bf.names...)
				if !slices.ContainsFunc(want, func(w string) bool { return strings.Contains(err.Error(), w) }) {
					t.Errorf("error %q does not name %v", err, want)
				}
				if entries, _ := os.ReadDir(specDir); len(entries) > 0 {
					t.Errorf("a spec was written before the bad flag stopped start-up: %v", entries)
				}
				if entries, _ := os.ReadDir(sockDir); len(entries) > 0 {
					t.Errorf("a socket was made before the bad flag stopped start-up: %v", entries)
				}
			})
		}
	}

	t.Run("--allow-ids and --deny-ids together", func(t *testing.T) {
		err, _ := runApp(t, []string{"intel-gpu-cdi", "plugin", "--sysfs-root", n.Sys, "--dev-root", n.Dev,
			"--kubelet-socket-dir", testenv.SocketDir(t), "--cdi-spec-dir", t.TempDir(),
			"--allow-ids", "0x56a0", "--deny-ids", "0x46a6"})
		if err == nil || !strings.Contains(err.Error(), "--allow-ids") || !strings.Contains(err.Error(), "--deny-ids") {
			t.Errorf("error %v does not name both flags", err)
		}
	})
}

// startUpDeadline is how long a bad flag may take to stop start-up; a
// plugin that is still running then has started.
const startUpDeadline = 3 * time.Second

// runApp runs the app until it returns or startUpDeadline passes, and
// returns its error and what it logged.
func runApp(t *testing.T, args []string) (error, string) {
	t.Helper()
	a := app.New()
	var stdout, stderr bytes.Buffer
	a.Writer, a.ErrWriter = &stdout, &stderr
	a.ExitErrHandler = func(*cli.Context, error) {}
	ctx, cancel := context.WithTimeout(context.Background(), startUpDeadline)
	defer cancel()
	err := a.RunContext(ctx, args)
	return err, stderr.String()
}
