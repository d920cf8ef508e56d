package app_test

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
	"go.uber.org/goleak"

	draapp "github.com/intel-gpu-cdi/intel-gpu-cdi/cmd/intel-gpu-cdi-dra/app"
	cdiapp "github.com/intel-gpu-cdi/intel-gpu-cdi/cmd/intel-gpu-cdi/app"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"))
}

type result struct {
	stdout, stderr string
	err            error
}

func run(t *testing.T, args ...string) result {
	t.Helper()
	a := draapp.New()
	var stdout, stderr bytes.Buffer
	a.Writer, a.ErrWriter = &stdout, &stderr
	err := a.Run(append([]string{draapp.Name}, args...))
	return result{stdout.String(), stderr.String(), err}
}

func TestEveryFlagHasItsEnvironmentVariable(t *testing.T) {
	for _, f := range draapp.New().Flags {
		name := f.Names()[0]
		t.Run("--"+name+" is read from its variable", func(t *testing.T) {
			want := cdiapp.EnvPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
			df, ok := f.(cli.DocGenerationFlag)
			if !ok || !slices.Equal(df.GetEnvVars(), []string{want}) {
				t.Errorf("variables %v, want [%s]", df.GetEnvVars(), want)
			}
		})
	}
}

func TestSharedFlagsMeanTheSameAsForThePlugin(t *testing.T) {
	var plugin *cli.Command
	for _, c := range cdiapp.New().Commands {
		if c.Name == "plugin" {
			plugin = c
		}
	}
	if plugin == nil {
		t.Fatal("no plugin command")
	}
	pluginFlags := map[string]cli.Flag{}
	for _, f := range plugin.Flags {
		pluginFlags[f.Names()[0]] = f
	}
	shared := 0
	for _, f := range draapp.New().Flags {
		p, ok := pluginFlags[f.Names()[0]]
		if !ok {
			continue
		}
		shared++
		a, b := f.(cli.DocGenerationFlag), p.(cli.DocGenerationFlag)
		// The shares differ in meaning; the plugin finds plugins_registry
		// beside --kubelet-socket-dir unless told, where the driver, which
		// registers there, names it.
		if a.GetDefaultText() != b.GetDefaultText() && f.Names()[0] != "shared-dev-num" && f.Names()[0] != "kubelet-registrar-dir" {
			t.Errorf("--%s: default %q here, %q for plugin", f.Names()[0], a.GetDefaultText(), b.GetDefaultText())
		}
		if !slices.Equal(a.GetEnvVars(), b.GetEnvVars()) {
			t.Errorf("--%s: variables %v here, %v for plugin", f.Names()[0], a.GetEnvVars(), b.GetEnvVars())
		}
	}
	// The roots, logging, spec shape, node, endpoints, kubelet socket dir
	// and shares.
	if shared < 16 {
		t.Errorf("only %d flags shared with plugin", shared)
	}
}

// env is a working environment for a run: a fake node, kubelet
// directories, a kubeconfig (to an address where nothing listens: flags
// are checked before the API server is reached).
func env(t *testing.T) (*fakenode.Node, map[string]string) {
	t.Helper()
	n := fakenode.NewT(t)
	n.MustApply(t, fakenode.IGPU)
	root, err := os.MkdirTemp("", "dra")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	for _, d := range []string{"plugins_registry", "plugins", "device-plugins"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	kubeconfig := filepath.Join(root, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	return n, map[string]string{
		"sysfs-root": n.Sys, "dev-root": n.Dev, "node-name": "node-1",
		"kubelet-registrar-dir": filepath.Join(root, "plugins_registry"),
		"kubelet-plugins-dir":   filepath.Join(root, "plugins"),
		"kubelet-socket-dir":    filepath.Join(root, "device-plugins"),
		"cdi-spec-dir":          filepath.Join(root, "cdi"),
		"kubeconfig":            kubeconfig,
		"log-level":             "error",
	}
}

func argsOf(flags map[string]string) []string {
	var out []string
	for k, v := range flags {
		out = append(out, "--"+k+"="+v)
	}
	return out
}

// badFlags lists, for every flag, values that must stop start-up with an
// error naming the flag. "@file" is a regular file, "@long" a directory
// too long for a socket path in it.
var badFlags = map[string][]string{
	"sysfs-root":            {"", "/nonexistent/sys", "@file"},
	"dev-root":              {"", "/nonexistent/dev", "@file"},
	"log-level":             {"", "loud"},
	"log-format":            {"", "xml"},
	"verbose":               {"maybe"},
	"vendor":                {"", "Intel Corp"},
	"class":                 {"", "g/pu"},
	"by-path":               {"", "all"},
	"cdi-spec-dir":          {"", "@file"},
	"allow-ids":             {"0x56a", "zz"},
	"deny-ids":              {"0x56a00"},
	"resync-period":         {"-1s", "10ms", "soon"},
	"metrics-address":       {"not an address", ":99999"},
	"probe-address":         {"not an address", ":99999"},
	"health-sources":        {"bogus", "uevent,wedges"},
	"health-state-file":     {"@file"},
	"health-fatal-aer":      {"-1", "many"},
	"health-nonfatal-aer":   {"-1"},
	"health-hangs":          {"x"},
	"node-name":             {"", "a/b", "Node_1"},
	"driver-name":           {"", "GPU_Intel", "gpu intel"},
	"kubelet-registrar-dir": {"", "relative", "/nonexistent/registry", "@file", "@long"},
	"kubelet-plugins-dir":   {"", "relative", "@file", "@long"},
	"kubelet-socket-dir":    {"", "relative"},
	"shared-dev-num":        {"0", "-1", "1025", "two"},
	"kubeconfig":            {"/nonexistent/kubeconfig", "@file"},
	"kube-api-qps":          {"0", "-1", "fast"},
	"kube-api-burst":        {"0", "-5", "many"},
}

func TestEveryFlagRejectsBadValuesAtStartUp(t *testing.T) {
	for _, f := range draapp.New().Flags {
		if _, ok := badFlags[f.Names()[0]]; !ok {
			t.Errorf("--%s has no bad values in the table", f.Names()[0])
		}
	}
	for flag, values := range badFlags {
		for _, v := range values {
			t.Run("--"+flag+"="+v, func(t *testing.T) {
				_, flags := env(t)
				file := filepath.Join(t.TempDir(), "a-file")
				if err := os.WriteFile(file, []byte("not a kubeconfig: ["), 0o644); err != nil {
					t.Fatal(err)
				}
				switch v {
				case "@file":
					v = file
				case "@long":
					v = "/" + strings.Repeat("d", 95)
				}
				flags[flag] = v
				r := run(t, argsOf(flags)...)
				if r.err == nil || !strings.Contains(r.err.Error(), "-"+flag) {
					t.Fatalf("err = %v, want one naming --%s", r.err, flag)
				}
				if _, err := os.Stat(filepath.Join(flags["cdi-spec-dir"], "intel.com-gpu.json")); err == nil {
					t.Error("a spec was written before the flags were checked")
				}
			})
		}
	}
}

func TestRefusesToStartWhereTheDevicePluginServes(t *testing.T) {
	_, flags := env(t)
	sock := filepath.Join(flags["kubelet-socket-dir"], "intel-gpu-cdi-i915.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r := run(t, argsOf(flags)...)
	if r.err == nil || !strings.Contains(r.err.Error(), sock) || !strings.Contains(r.err.Error(), "device plugin") {
		t.Fatalf("err = %v, want a refusal naming %s", r.err, sock)
	}
	entries, _ := os.ReadDir(flags["kubelet-registrar-dir"])
	if len(entries) != 0 {
		t.Errorf("registered anyway: %v", entries)
	}
	if _, err := os.Stat(filepath.Join(flags["cdi-spec-dir"], "intel.com-gpu.json")); err == nil {
		t.Error("a spec was written")
	}
}

func TestVersionPrintsTheBuildVersion(t *testing.T) {
	old := cdiapp.Version
	cdiapp.Version = "v1.2.3-test"
	t.Cleanup(func() { cdiapp.Version = old })
	r := run(t, "version")
	if r.err != nil || !strings.HasPrefix(r.stdout, "intel-gpu-cdi-dra v1.2.3-test (go") {
		t.Errorf("version = %q, %v", r.stdout, r.err)
	}
}
