package deploy_test

import (
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
)

// The files that prepare a node for the non-root plugin.
const (
	nonRootTmpfiles = "intel-gpu-cdi-non-root.conf"
	kubeletSockPath = "intel-gpu-cdi-kubelet-sock.path"
	kubeletSockSvc  = "intel-gpu-cdi-kubelet-sock.service"
)

// tmpfilesLine is one line of a tmpfiles.d file.
type tmpfilesLine struct{ Type, Path, Mode, User, Group, Age, Arg string }

func readTmpfiles(t *testing.T, file string) []tmpfilesLine {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []tmpfilesLine
	for n, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if len(f) != 7 {
			t.Fatalf("%s:%d: want 7 fields (type path mode user group age argument), got %q", file, n+1, line)
		}
		out = append(out, tmpfilesLine{f[0], f[1], f[2], f[3], f[4], f[5], f[6]})
	}
	return out
}

// The GID is the key to the node: the files that grant it and the manifests
// that run as it must name the same one, and the files may grant it nothing
// beyond the plugin's two directories and kubelet.sock.
func TestNodePreparationMatchesTheManifests(t *testing.T) {
	group := fmt.Sprintf("group:%d:", nonRootID)
	dp := defaultPluginDirs.KubeletSocketDir
	sock := dp + "/kubelet.sock"
	// systemd-tmpfiles names /var/run by its real path, /run.
	cdiDir := strings.Replace(defaultPluginDirs.CDISpecDir, "/var/run/", "/run/", 1)

	want := map[string]string{dp: group + "rwx", sock: group + "rw-", cdiDir: group + "rwx"}
	got := map[string]string{}
	for _, l := range readTmpfiles(t, deployments("tmpfiles.d", nonRootTmpfiles)) {
		switch l.Type {
		case "d":
			// The kubelet creates its own directory; /run/cdi is a tmpfs dir
			// nobody may have made yet. No mode or owner: a mode is
			// re-applied at every run and resets the ACL mask.
			if l.Path != cdiDir || l.Mode != "-" || l.User != "-" || l.Group != "-" {
				t.Errorf("d %s %s %s %s: the file creates only %s, with no mode or owner", l.Path, l.Mode, l.User, l.Group, cdiDir)
			}
		case "a+":
			got[l.Path] = l.Arg
			if l.Mode != "-" || l.User != "-" || l.Group != "-" {
				t.Errorf("a+ %s sets mode or owner", l.Path)
			}
		default:
			t.Errorf("line type %q for %s: the file only creates directories and adds ACL entries", l.Type, l.Path)
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("ACL lines %v, want %v", got, want)
	}

	path := readUnit(t, deployments("systemd", kubeletSockPath))
	if got := path["Path"]["PathChanged"]; !slices.Equal(got, []string{sock}) {
		t.Errorf("%s: PathChanged = %v, want [%s]", kubeletSockPath, got, sock)
	}
	if got := path["Path"]["Unit"]; !slices.Equal(got, []string{kubeletSockSvc}) {
		t.Errorf("%s: Unit = %v, want [%s]", kubeletSockPath, got, kubeletSockSvc)
	}
	svc := readUnit(t, deployments("systemd", kubeletSockSvc))
	if got, want := svc["Service"]["ExecStart"], []string{"/usr/bin/setfacl -m " + group + "rwx " + dp, "/usr/bin/setfacl -m " + group + "rw- " + sock}; !slices.Equal(got, want) {
		t.Errorf("%s: ExecStart = %q, want %q", kubeletSockSvc, got, want)
	}
	if got := svc["Unit"]["ConditionPathExists"]; !slices.Equal(got, []string{sock}) {
		t.Errorf("%s: ConditionPathExists = %v, want [%s]", kubeletSockSvc, got, sock)
	}

	t.Run("the non-root overlay runs as that GID", func(t *testing.T) {
		r := kustomize(t, deployments("kustomize", "overlays", "non-root"))
		sc := r.DaemonSets[0].Spec.Template.Spec.Containers[0].SecurityContext
		if sc == nil || sc.RunAsGroup == nil || *sc.RunAsGroup != nonRootID {
			t.Errorf("runAsGroup = %v, want %d", sc, nonRootID)
		}
	})
	t.Run("the chart's nonRoot value runs as that GID", func(t *testing.T) {
		chrt, err := loader.Load(deployments("helm", "intel-gpu-cdi"))
		if err != nil {
			t.Fatal(err)
		}
		nr, _ := chrt.Values["nonRoot"].(map[string]any)
		if got := fmt.Sprint(nr["runAsGroup"]); got != fmt.Sprint(nonRootID) {
			t.Errorf("nonRoot.runAsGroup = %s, want %d", got, nonRootID)
		}
	})
}

// asPluginEnv makes the test binary act as the non-root plugin (see
// TestMain): it tries what the plugin does on the host paths and prints one
// line per step.
const asPluginEnv = "IGC_DEPLOY_ACT_AS_PLUGIN"

func TestMain(m *testing.M) {
	if dirs := os.Getenv(asPluginEnv); dirs != "" {
		actAsPlugin(strings.Split(dirs, ":"))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// actAsPlugin does, as whatever user it runs as, the three things the plugin
// does on the host: connect to kubelet.sock, create its own socket next to
// it, and write its spec into the CDI dir by rename.
func actAsPlugin(dirs []string) {
	dp, cdiDir := dirs[0], dirs[1]
	report := func(step string, err error) {
		if err != nil {
			fmt.Printf("%s: %v\n", step, err)
			return
		}
		fmt.Printf("%s: ok\n", step)
	}
	c, err := net.Dial("unix", filepath.Join(dp, "kubelet.sock"))
	if err == nil {
		c.Close()
	}
	report("connect kubelet.sock", err)
	l, err := net.Listen("unix", filepath.Join(dp, "intel.com-gpu.sock"))
	if err == nil {
		l.Close()
	}
	report("create socket", err)
	tmp := filepath.Join(cdiDir, ".intel.com-gpu.json.tmp")
	err = os.WriteFile(tmp, []byte("{}\n"), 0o644)
	if err == nil {
		err = os.Rename(tmp, filepath.Join(cdiDir, "intel.com-gpu.json"))
	}
	report("write spec", err)
}

// The shipped node preparation, applied by the real systemd-tmpfiles to a
// copy of the two directories, lets the plugin's GID do what the plugin
// does; kubelet.sock, re-created by a kubelet start, needs the path unit's
// command again; and nothing but that GID gains anything.
func TestNodePreparationLetsTheGroupDoWhatThePluginDoes(t *testing.T) {
	tmpfiles := lookTool(t, "systemd-tmpfiles", "apt-get install systemd")
	lookTool(t, "setfacl", "apt-get install acl")
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root: the directories are root's and the plugin stand-in runs as %d", nonRootID)
	}
	// The stand-in must reach the directories, as the plugin reaches them
	// through the container's own /var/lib/kubelet and /var/run: t.TempDir's
	// parent is 0700.
	root, err := os.MkdirTemp("", "igc-deploy-nodeprep-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	dp := filepath.Join(root, "device-plugins")
	cdiDir := filepath.Join(root, "cdi")
	rewrite := strings.NewReplacer(defaultPluginDirs.KubeletSocketDir, dp, "/run/cdi", cdiDir)

	conf := filepath.Join(root, "prep.conf")
	raw, err := os.ReadFile(deployments("tmpfiles.d", nonRootTmpfiles))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte(rewrite.Replace(string(raw))), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(argv ...string) {
		t.Helper()
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
		}
	}
	svc := readUnit(t, deployments("systemd", kubeletSockSvc))
	// What intel-gpu-cdi-kubelet-sock.path starts at each kubelet start.
	pathUnitFires := func() {
		t.Helper()
		for _, line := range svc["Service"]["ExecStart"] {
			run(strings.Fields(rewrite.Replace(line))...)
		}
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	standIn := filepath.Join(root, "stand-in")
	if b, err := os.ReadFile(self); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(standIn, b, 0o755); err != nil {
		t.Fatal(err)
	}
	actAs := func(uid, gid uint32) map[string]string {
		t.Helper()
		cmd := exec.Command(standIn)
		cmd.Env = []string{asPluginEnv + "=" + dp + ":" + cdiDir}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("stand-in as %d:%d: %v\n%s", uid, gid, err, out)
		}
		steps := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			step, result, _ := strings.Cut(line, ": ")
			steps[step] = result
		}
		return steps
	}
	// kubelet.sock as the kubelet makes it: root's, under umask 0022.
	kubeletSock := func() net.Listener {
		t.Helper()
		old := syscall.Umask(0o022)
		defer syscall.Umask(old)
		_ = os.Remove(filepath.Join(dp, "kubelet.sock"))
		l, err := net.Listen("unix", filepath.Join(dp, "kubelet.sock"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	check := func(t *testing.T, steps map[string]string, want map[string]bool) {
		t.Helper()
		for step, ok := range want {
			got, seen := steps[step]
			switch {
			case !seen:
				t.Errorf("%s: the stand-in did not try it", step)
			case ok && got != "ok":
				t.Errorf("%s: %s, want ok", step, got)
			case !ok && (got == "ok" || !strings.Contains(got, "permission denied")):
				t.Errorf("%s: %s, want permission denied", step, got)
			}
		}
	}
	// The kubelet made its directory (0750, as it does) and the CDI dir
	// exists, both before the preparation.
	for _, d := range []string{dp, cdiDir} {
		if err := os.Mkdir(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	kubeletSock()

	t.Run("unprepared, the plugin's group can do none of it", func(t *testing.T) {
		check(t, actAs(nonRootID, nonRootID), map[string]bool{"connect kubelet.sock": false, "create socket": false, "write spec": false})
	})

	run(tmpfiles, "--create", conf)

	t.Run("prepared, the plugin's group can do all of it", func(t *testing.T) {
		check(t, actAs(nonRootID, nonRootID), map[string]bool{"connect kubelet.sock": true, "create socket": true, "write spec": true})
	})
	t.Run("another non-root user gains nothing", func(t *testing.T) {
		check(t, actAs(nonRootID+1, nonRootID+1), map[string]bool{"connect kubelet.sock": false, "create socket": false, "write spec": false})
	})

	t.Run("a default ACL on the directory would not reach a re-created kubelet.sock", func(t *testing.T) {
		run("setfacl", "-m", fmt.Sprintf("default:group:%d:rw-", nonRootID), dp)
		defer run("setfacl", "-k", dp)
		kubeletSock()
		check(t, actAs(nonRootID, nonRootID), map[string]bool{"connect kubelet.sock": false})
	})

	// A kubelet start re-creates kubelet.sock without the entry.
	kubeletSock()
	t.Run("after a kubelet start, kubelet.sock is out of reach until the path unit's command runs", func(t *testing.T) {
		check(t, actAs(nonRootID, nonRootID), map[string]bool{"connect kubelet.sock": false, "create socket": true})
		pathUnitFires()
		check(t, actAs(nonRootID, nonRootID), map[string]bool{"connect kubelet.sock": true})
	})

	t.Run("running the preparation again changes nothing", func(t *testing.T) {
		before := aclText(t, dp, cdiDir, filepath.Join(dp, "kubelet.sock"))
		run(tmpfiles, "--create", conf)
		pathUnitFires()
		if after := aclText(t, dp, cdiDir, filepath.Join(dp, "kubelet.sock")); after != before {
			t.Errorf("ACLs changed:\n%s\nwant\n%s", after, before)
		}
	})
}

// aclText is getfacl's view of paths.
func aclText(t *testing.T, paths ...string) string {
	t.Helper()
	out, err := exec.Command("getfacl", append([]string{"--absolute-names"}, paths...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("getfacl: %v\n%s", err, out)
	}
	return string(out)
}
