package deploy_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// dockerfileInstr is one instruction of a Dockerfile/Containerfile, with
// continuation lines joined.
type dockerfileInstr struct{ Cmd, Args string }

func readDockerfile(t *testing.T, file string) []dockerfileInstr {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []dockerfileInstr
	var cur strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		s := strings.TrimSpace(line)
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		if strings.HasSuffix(s, `\`) {
			cur.WriteString(strings.TrimSuffix(s, `\`) + " ")
			continue
		}
		cur.WriteString(s)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, dockerfileInstr{strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

// finalStage returns the instructions after the last FROM: the default
// target.
func finalStage(instrs []dockerfileInstr) (from string, rest []dockerfileInstr) {
	for i := len(instrs) - 1; i >= 0; i-- {
		if instrs[i].Cmd == "FROM" {
			return instrs[i].Args, instrs[i+1:]
		}
	}
	return "", nil
}

// namedStage returns the instructions of the stage `FROM <from> AS <name>`,
// up to the next FROM.
func namedStage(instrs []dockerfileInstr, name string) (from string, rest []dockerfileInstr) {
	for i, in := range instrs {
		fields := strings.Fields(in.Args)
		if in.Cmd != "FROM" || len(fields) < 3 || !strings.EqualFold(fields[len(fields)-2], "AS") || fields[len(fields)-1] != name {
			continue
		}
		end := i + 1
		for end < len(instrs) && instrs[end].Cmd != "FROM" {
			end++
		}
		return strings.Join(fields[:len(fields)-2], " "), instrs[i+1 : end]
	}
	return "", nil
}

func lastOf(instrs []dockerfileInstr, cmd string) string {
	v := ""
	for _, in := range instrs {
		if in.Cmd == cmd {
			v = in.Args
		}
	}
	return v
}

// versionLdflag is the -X flag of the Dockerfile's go build, which the image
// test reuses so that a renamed version variable fails here.
var versionLdflag = regexp.MustCompile(`-X\s+(\S+)=\$\{?VERSION\}?`)

// imageTarget is one image the image files build: the device plugin is the
// default target, the DRA driver the target dra.
type imageTarget struct {
	Target  string // "" for the default
	Binary  string // the binary's name, and its ./cmd/ directory
	Cmd     string // the image's CMD, JSON; "" for none
	Version string // what `<binary> version` starts with
}

var imageTargets = []imageTarget{
	{Target: "", Binary: "intel-gpu-cdi", Cmd: `["plugin"]`, Version: "intel-gpu-cdi "},
	// The driver runs without a subcommand: the DaemonSet passes no args.
	{Target: "dra", Binary: "intel-gpu-cdi-dra", Version: "intel-gpu-cdi-dra "},
}

func (it imageTarget) path() string { return "/usr/local/bin/" + it.Binary }

func (it imageTarget) stage(instrs []dockerfileInstr) (string, []dockerfileInstr) {
	if it.Target == "" {
		return finalStage(instrs)
	}
	return namedStage(instrs, it.Target)
}

func (it imageTarget) String() string {
	if it.Target == "" {
		return "the default target (" + it.Binary + ")"
	}
	return "the target " + it.Target + " (" + it.Binary + ")"
}

func TestImageFiles(t *testing.T) {
	for _, tc := range []struct{ file, base string }{
		{"Dockerfile", "gcr.io/distroless/static"},
		{"Containerfile.scratch", "scratch"},
	} {
		for _, it := range imageTargets {
			t.Run(tc.file+", "+it.String(), func(t *testing.T) {
				from, stage := it.stage(readDockerfile(t, deployments("image", tc.file)))
				if !strings.HasPrefix(from, tc.base) {
					t.Errorf("stage FROM %q, want %s", from, tc.base)
				}
				// The DaemonSets pass only args: the entrypoint must be the binary.
				if got := lastOf(stage, "ENTRYPOINT"); got != `["`+it.path()+`"]` {
					t.Errorf("ENTRYPOINT %s, want [%q]", got, it.path())
				}
				if got := lastOf(stage, "CMD"); got != it.Cmd {
					t.Errorf("CMD %q, want %q", got, it.Cmd)
				}
				if got := lastOf(stage, "USER"); got != "0:0" && got != "0" {
					t.Errorf("USER %q, want 0 (see the comment in the file)", got)
				}
				copied := false
				for _, in := range stage {
					copied = copied || (in.Cmd == "COPY" && strings.HasSuffix(in.Args, " "+it.path()))
				}
				if !copied {
					t.Errorf("the stage does not COPY the binary to %s", it.path())
				}
			})
		}
	}

	t.Run("the Dockerfile builds each binary static, trimmed and versioned", func(t *testing.T) {
		instrs := readDockerfile(t, deployments("image", "Dockerfile"))
		for _, it := range imageTargets {
			var build string
			for _, in := range instrs {
				if in.Cmd == "RUN" && strings.Contains(in.Args, "go build") && strings.HasSuffix(in.Args, " ./cmd/"+it.Binary) {
					build = in.Args
				}
			}
			if build == "" {
				t.Errorf("no go build step of ./cmd/%s", it.Binary)
				continue
			}
			for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-s -w", "-o /out/" + it.Binary + " "} {
				if !strings.Contains(build, want) {
					t.Errorf("%s: go build step lacks %q: %s", it.Binary, want, build)
				}
			}
			if !versionLdflag.MatchString(build) {
				t.Errorf("%s: go build step sets no version with -X <var>=${VERSION}: %s", it.Binary, build)
			}
		}
	})
}

// buildBinary builds the product's binary name as the Dockerfile does,
// with the version variable the Dockerfile names set to version.
func buildBinary(t *testing.T, dir, name, version string) string {
	t.Helper()
	goTool := lookTool(t, "go", "the Go toolchain")
	data, err := os.ReadFile(deployments("image", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	m := versionLdflag.FindSubmatch(data)
	if m == nil {
		t.Fatal("the Dockerfile names no version variable")
	}
	out := filepath.Join(dir, name)
	cmd := exec.Command(goTool, "build", "-trimpath",
		"-ldflags", fmt.Sprintf("-s -w -X %s=%s", m[1], version),
		"-o", out, "./cmd/"+name)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

// podmanRig runs podman as this kind of machine needs it.
type podmanRig struct {
	t      *testing.T
	ctx    context.Context
	podman string
}

// newPodman finds podman and runc, or skips (fails in CI).
func newPodman(t *testing.T) *podmanRig {
	t.Helper()
	podman := lookTool(t, "podman", "apt-get install podman runc")
	if os.Geteuid() != 0 {
		skipOrFail(t, "podman here runs as root only (rootless needs subuid setup this test does not do)")
	}
	lookTool(t, "runc", "apt-get install runc")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return &podmanRig{t: t, ctx: ctx, podman: podman}
}

// run runs podman with cgroupfs and runc: this kind of machine has no
// systemd cgroup manager and crun fails on its hybrid cgroups (see
// DESIGN.md).
func (p *podmanRig) run(args ...string) (string, error) { return p.runCtx(p.ctx, args...) }

func (p *podmanRig) runCtx(ctx context.Context, args ...string) (string, error) {
	full := append([]string{"--cgroup-manager=cgroupfs", "--runtime", "runc"}, args...)
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, p.podman, full...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// remove removes a container, if it is there, within its own deadline (the
// rig's may be over).
func (p *podmanRig) remove(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := p.runCtx(ctx, "rm", "--force", "--ignore", "--time", "5", name); err != nil {
		p.t.Logf("podman rm %s: %v\n%s", name, err, out)
	}
}

// buildScratchImage builds the target's binary and wraps it with
// Containerfile.scratch; the image is removed when the test ends.
func (p *podmanRig) buildScratchImage(it imageTarget, version string) string {
	t := p.t
	t.Helper()
	ctxDir := t.TempDir()
	buildBinary(t, ctxDir, it.Binary, version)
	image := fmt.Sprintf("localhost/%s-imagetest:%d", it.Binary, os.Getpid())
	args := []string{"build", "--pull=never", "-f", deployments("image", "Containerfile.scratch"), "-t", image}
	if it.Target != "" {
		args = append(args, "--target", it.Target)
	}
	if out, err := p.run(append(args, ctxDir)...); err != nil {
		t.Fatalf("podman build %s: %v\n%s", it, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(p.podman, "rmi", "--force", image).CombinedOutput(); err != nil {
			t.Logf("podman rmi %s: %v\n%s", image, err, out)
		}
	})
	return image
}

func TestScratchImagesRunVersion(t *testing.T) {
	p := newPodman(t)
	for _, it := range imageTargets {
		t.Run(it.String(), func(t *testing.T) {
			p := &podmanRig{t: t, ctx: p.ctx, podman: p.podman}
			version := fmt.Sprintf("0.0.0-imagetest.%d", time.Now().UnixNano())
			image := p.buildScratchImage(it, version)

			out, err := p.run("image", "inspect", "--format", "{{.Config.User}} {{json .Config.Entrypoint}} {{json .Config.Cmd}}", image)
			if err != nil {
				t.Fatalf("podman image inspect: %v\n%s", err, out)
			}
			cmd := it.Cmd
			if cmd == "" {
				cmd = "null"
			}
			if want := fmt.Sprintf(`0:0 ["%s"] %s`, it.path(), cmd); strings.TrimSpace(out) != want {
				t.Errorf("image config %q, want %q", strings.TrimSpace(out), want)
			}

			out, err = p.run("run", "--rm", "--network", "none",
				"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", image, "version")
			if err != nil {
				t.Fatalf("podman run %s version: %v\n%s", image, err, out)
			}
			// The binary reports the version the Dockerfile's -X sets.
			if !strings.Contains(out, it.Version+version) {
				t.Errorf("podman run %s version printed %q, want it to carry %s%s", image, out, it.Version, version)
			}
		})
	}
}
