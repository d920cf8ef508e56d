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

// finalStage returns the instructions after the last FROM.
func finalStage(instrs []dockerfileInstr) (from string, rest []dockerfileInstr) {
	for i := len(instrs) - 1; i >= 0; i-- {
		if instrs[i].Cmd == "FROM" {
			return instrs[i].Args, instrs[i+1:]
		}
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

func TestImageFiles(t *testing.T) {
	for _, tc := range []struct{ file, base string }{
		{"Dockerfile", "gcr.io/distroless/static"},
		{"Containerfile.scratch", "scratch"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			instrs := readDockerfile(t, deployments("image", tc.file))
			from, final := finalStage(instrs)
			if !strings.HasPrefix(from, tc.base) {
				t.Errorf("final stage FROM %q, want %s", from, tc.base)
			}
			// The DaemonSet passes only args ("plugin"): the entrypoint must be the binary.
			if got := lastOf(final, "ENTRYPOINT"); got != `["`+binaryPath+`"]` {
				t.Errorf("ENTRYPOINT %s, want [%q]", got, binaryPath)
			}
			if got := lastOf(final, "USER"); got != "0:0" && got != "0" {
				t.Errorf("USER %q, want 0 (see the comment in the file)", got)
			}
			copied := false
			for _, in := range final {
				copied = copied || (in.Cmd == "COPY" && strings.HasSuffix(in.Args, " "+binaryPath))
			}
			if !copied {
				t.Errorf("the final stage does not COPY the binary to %s", binaryPath)
			}
		})
	}

	t.Run("the Dockerfile builds a static, trimmed, versioned binary", func(t *testing.T) {
		var build string
		for _, in := range readDockerfile(t, deployments("image", "Dockerfile")) {
			if in.Cmd == "RUN" && strings.Contains(in.Args, "go build") {
				build = in.Args
			}
		}
		for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-s -w", "./cmd/intel-gpu-cdi"} {
			if !strings.Contains(build, want) {
				t.Errorf("go build step lacks %q: %s", want, build)
			}
		}
		if !versionLdflag.MatchString(build) {
			t.Errorf("go build step sets no version with -X <var>=${VERSION}: %s", build)
		}
	})
}

// buildBinary builds the product as the Dockerfile does, with the version
// variable the Dockerfile names set to version.
func buildBinary(t *testing.T, dir, version string) string {
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
	out := filepath.Join(dir, "intel-gpu-cdi")
	cmd := exec.Command(goTool, "build", "-trimpath",
		"-ldflags", fmt.Sprintf("-s -w -X %s=%s", m[1], version),
		"-o", out, "./cmd/intel-gpu-cdi")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

func TestScratchImageRunsVersion(t *testing.T) {
	podman := lookTool(t, "podman", "apt-get install podman runc")
	if os.Geteuid() != 0 {
		skipOrFail(t, "podman here runs as root only (rootless needs subuid setup this test does not do)")
	}
	lookTool(t, "runc", "apt-get install runc")

	version := fmt.Sprintf("0.0.0-imagetest.%d", time.Now().UnixNano())
	ctxDir := t.TempDir()
	bin := buildBinary(t, ctxDir, version)

	t.Run("the binary reports the version the Dockerfile's -X sets", func(t *testing.T) {
		out, err := exec.Command(bin, "version").CombinedOutput()
		if err != nil || !strings.Contains(string(out), version) {
			t.Fatalf("version: %v\n%s", err, out)
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// cgroupfs and explicit ulimits: this kind of machine has no systemd
	// cgroup manager and refuses runc's default rlimits (see DESIGN.md).
	run := func(args ...string) (string, error) {
		full := append([]string{"--cgroup-manager=cgroupfs", "--runtime", "runc"}, args...)
		var out bytes.Buffer
		cmd := exec.CommandContext(ctx, podman, full...)
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	image := fmt.Sprintf("localhost/intel-gpu-cdi-imagetest:%d", os.Getpid())
	if out, err := run("build", "--pull=never", "-f", deployments("image", "Containerfile.scratch"), "-t", image, ctxDir); err != nil {
		t.Fatalf("podman build: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(podman, "rmi", "--force", image).CombinedOutput(); err != nil {
			t.Logf("podman rmi %s: %v\n%s", image, err, out)
		}
	})

	out, err := run("image", "inspect", "--format", "{{.Config.User}} {{json .Config.Entrypoint}} {{json .Config.Cmd}}", image)
	if err != nil {
		t.Fatalf("podman image inspect: %v\n%s", err, out)
	}
	if want := `0:0 ["/usr/local/bin/intel-gpu-cdi"] ["plugin"]`; strings.TrimSpace(out) != want {
		t.Errorf("image config %q, want %q", strings.TrimSpace(out), want)
	}

	out, err = run("run", "--rm", "--network", "none",
		"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", image, "version")
	if err != nil {
		t.Fatalf("podman run %s version: %v\n%s", image, err, out)
	}
	if !strings.Contains(out, "intel-gpu-cdi "+version) {
		t.Errorf("podman run %s version printed %q, want it to carry %s", image, out, version)
	}
}
