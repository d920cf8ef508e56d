package app_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/testenv"
)

// binDir holds the binary buildBinary builds, removed by TestMain.
var binDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// buildBinary builds intel-gpu-cdi once per test binary: the shells and
// the never-executes tests run the real program.
var buildBinary = func() func(t *testing.T) string {
	var (
		once sync.Once
		bin  string
		err  error
	)
	return func(t *testing.T) string {
		t.Helper()
		once.Do(func() {
			if binDir, err = os.MkdirTemp("", "intel-gpu-cdi-bin"); err != nil {
				return
			}
			bin = filepath.Join(binDir, "intel-gpu-cdi")
			// go test puts its own go first on PATH.
			out, buildErr := exec.Command("go", "build", "-o", bin, "..").CombinedOutput()
			if buildErr != nil {
				err = fmt.Errorf("go build: %v\n%s", buildErr, out)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		return bin
	}
}()

// pty is an interactive shell on a pseudo-terminal: the test types at it
// as a person would, so completion runs exactly as the shell runs it.
type pty struct {
	t      *testing.T
	master *os.File
	cmd    *exec.Cmd
	out    string // the file each finished line is echoed into
	mu     sync.Mutex
	screen strings.Builder
}

// startShell starts shell interactively, without the user's startup
// files, in an empty directory (so that a fallback to file names has
// nothing to offer), with bin's directory first on PATH.
func startShell(t *testing.T, bin string, argv ...string) *pty {
	t.Helper()
	if _, err := exec.LookPath(argv[0]); err != nil {
		testenv.Unavailable(t, "%s is not installed (apt-get install %s)", argv[0], argv[0])
	}
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		testenv.Unavailable(t, "no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close()
	// Wide enough that no typed line wraps.
	if err := unix.IoctlSetWinsize(int(slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 50, Col: 400}); err != nil {
		t.Fatal(err)
	}

	home, cwd := t.TempDir(), t.TempDir()
	p := &pty{t: t, master: master, out: filepath.Join(home, "lines")}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Dir = cwd
	p.cmd.Env = []string{
		"PATH=" + filepath.Dir(bin) + ":" + os.Getenv("PATH"),
		"HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config"),
		"XDG_DATA_HOME=" + filepath.Join(home, ".local/share"), "TERM=xterm", "LANG=C.UTF-8",
	}
	p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = slave, slave, slave
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			p.mu.Lock()
			p.screen.Write(buf[:n])
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	})
	return p
}

// shellDeadline bounds each wait for the shell: only a hang reaches it.
const shellDeadline = 30 * time.Second

// run types a command and waits until it has appended its marker line.
func (p *pty) run(command string) {
	p.t.Helper()
	p.type_(fmt.Sprintf("%s; echo ready >> %s\n", command, p.out))
	p.waitLines(len(p.lines()) + 1)
}

// complete types line, presses TAB, and returns the line as the shell
// completed it: the test then moves to the start of the line (C-a), makes
// it an echo into the output file and presses Enter, so nothing typed is
// ever run.
func (p *pty) complete(line string) string {
	p.t.Helper()
	before := len(p.lines())
	p.type_(line + "\t" + "\x01echo \x05 >> " + p.out + "\n")
	lines := p.waitLines(before + 1)
	return lines[before]
}

func (p *pty) type_(s string) {
	p.t.Helper()
	if _, err := p.master.Write([]byte(s)); err != nil {
		p.t.Fatal(err)
	}
}

func (p *pty) lines() []string {
	data, _ := os.ReadFile(p.out)
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

func (p *pty) waitLines(n int) []string {
	p.t.Helper()
	deadline := time.Now().Add(shellDeadline)
	for {
		if l := p.lines(); len(l) >= n {
			return l
		}
		if time.Now().After(deadline) {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.t.Fatalf("the shell wrote no line %d within %v; terminal:\n%q", n, shellDeadline, p.screen.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestShellCompletion loads each shell's script the way its README line
// says, completes at a real prompt, and checks what the shell made of the
// line: commands, flags, fixed flag values in both --flag value and
// --flag=value form, comma lists, and the completion command's shells.
// Lines with "--", a partial flag, or the plugin command must complete
// without the command running: no spec file, no socket, no spec dir.
func TestShellCompletion(t *testing.T) {
	bin := buildBinary(t)
	n := fakenode.NewT(t)
	n.MustApply(t, fakenode.IGPU)
	work := t.TempDir()
	spec := filepath.Join(work, "x.yaml")
	sockDir := filepath.Join(work, "kubelet")
	specDir := filepath.Join(work, "cdi")
	nodeFlags := "--sysfs-root " + n.Sys + " --dev-root " + n.Dev

	shells := []struct {
		name  string
		argv  []string
		setup func(t *testing.T) string
	}{
		{name: "bash", argv: []string{"bash", "--norc", "--noprofile", "-i"},
			setup: func(*testing.T) string { return "source <(intel-gpu-cdi completion bash)" }},
		{name: "zsh, autoloaded from fpath", argv: []string{"zsh", "-f", "-i"},
			setup: func(t *testing.T) string {
				dir := t.TempDir()
				script, err := exec.Command(bin, "completion", "zsh").Output()
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, "_intel-gpu-cdi"), script, 0o644); err != nil {
					t.Fatal(err)
				}
				return "fpath=(" + dir + " $fpath); autoload -Uz compinit; compinit -u -D"
			}},
		{name: "zsh, sourced", argv: []string{"zsh", "-f", "-i"},
			setup: func(*testing.T) string {
				return "autoload -Uz compinit; compinit -u -D; source <(intel-gpu-cdi completion zsh)"
			}},
		{name: "fish", argv: []string{"fish", "--no-config", "-i"},
			setup: func(*testing.T) string { return "intel-gpu-cdi completion fish | source" }},
	}
	cases := []struct{ typed, want string }{
		{"intel-gpu-cdi gen", "intel-gpu-cdi generate"},
		{"intel-gpu-cdi generate --for", "intel-gpu-cdi generate --format"},
		{"intel-gpu-cdi generate --format=js", "intel-gpu-cdi generate --format=json"},
		{"intel-gpu-cdi generate --by-path n", "intel-gpu-cdi generate --by-path none"},
		{"intel-gpu-cdi list --format t", "intel-gpu-cdi list --format table"},
		{"intel-gpu-cdi --log-level=wa", "intel-gpu-cdi --log-level=warn"},
		{"intel-gpu-cdi list --log-format j", "intel-gpu-cdi list --log-format json"},
		{"intel-gpu-cdi plugin --allocation-policy b", "intel-gpu-cdi plugin --allocation-policy balanced"},
		{"intel-gpu-cdi plugin --device-list-strategy cdi-cri,d", "intel-gpu-cdi plugin --device-list-strategy cdi-cri,device-specs"},
		{"intel-gpu-cdi completion f", "intel-gpu-cdi completion fish"},
		// Neither may run: each completes to itself.
		{"intel-gpu-cdi generate " + nodeFlags + " -o " + spec + " --", ""},
		{"intel-gpu-cdi generate " + nodeFlags + " -o " + spec + " -- ", ""},
		{"intel-gpu-cdi generate " + nodeFlags + " -o " + spec + " --by", "intel-gpu-cdi generate " + nodeFlags + " -o " + spec + " --by-path"},
		{"intel-gpu-cdi plugin " + nodeFlags + " --kubelet-socket-dir " + sockDir + " --cdi-spec-dir " + specDir + " --", ""},
		{"intel-gpu-cdi plugin " + nodeFlags + " --kubelet-socket-dir " + sockDir + " --cdi-spec-dir " + specDir + " -- ", ""},
	}
	for _, sh := range shells {
		t.Run(sh.name, func(t *testing.T) {
			p := startShell(t, bin, sh.argv...)
			p.run(sh.setup(t))
			for _, c := range cases {
				want := c.want
				if want == "" {
					want = strings.TrimSpace(c.typed)
				}
				if got := strings.TrimSpace(p.complete(c.typed)); got != want {
					t.Errorf("%q<TAB> gave %q, want %q", c.typed, got, want)
				}
			}
			for _, p := range []string{spec, sockDir, specDir} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("completion ran the command: %s exists", p)
				}
			}
		})
	}
}
