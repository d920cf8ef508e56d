package app_test

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/testenv"
)

// entry is what a refused command must leave exactly as it was.
type entry struct {
	st      unix.Stat_t
	content []byte
	link    string
}

func lstat(t *testing.T, p string) entry {
	t.Helper()
	var e entry
	if err := unix.Lstat(p, &e.st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	switch e.st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		e.content, _ = os.ReadFile(p)
	case unix.S_IFLNK:
		e.link, _ = os.Readlink(p)
	}
	return e
}

func (e entry) same(o entry) bool {
	return e.st.Ino == o.st.Ino && e.st.Mode == o.st.Mode && e.st.Rdev == o.st.Rdev && e.st.Size == o.st.Size &&
		e.st.Mtim == o.st.Mtim && bytes.Equal(e.content, o.content) && e.link == o.link
}

// TestGenerateWritesOnlyWhatItOwns puts at --output each thing generate
// must not replace, on a node with a GPU (generate would write) and on one
// without (generate would remove a stale spec), and checks exit 1, an
// error naming --output, the path and what is there, and the path exactly
// as it was.
func TestGenerateWritesOnlyWhatItOwns(t *testing.T) {
	theirs := strings.Replace(oldSpec, "intel.com/gpu", "nvidia.com/gpu", 1)
	occupants := []struct {
		name    string
		make    func(t *testing.T, p string)
		wantErr string
	}{
		{"a directory", func(t *testing.T, p string) { must(t, os.Mkdir(p, 0o755)) }, "it is a directory"},
		{"a FIFO", func(t *testing.T, p string) { must(t, unix.Mkfifo(p, 0o644)) }, "it is a named pipe (FIFO)"},
		{"a socket", func(t *testing.T, p string) {
			l, err := net.Listen("unix", p)
			must(t, err)
			l.(*net.UnixListener).SetUnlinkOnClose(false)
			t.Cleanup(func() { l.Close() })
		}, "it is a socket"},
		{"a symlink to a spec of ours", func(t *testing.T, p string) {
			real := filepath.Join(filepath.Dir(p), "real.yaml")
			must(t, os.WriteFile(real, []byte(oldSpec), 0o644))
			must(t, os.Symlink(real, p))
		}, "it is a symbolic link to "},
		{"a text file", func(t *testing.T, p string) { must(t, os.WriteFile(p, []byte("# my notes\n- one\n"), 0o644)) }, "it is not a CDI spec"},
		{"another vendor's spec", func(t *testing.T, p string) { must(t, os.WriteFile(p, []byte(theirs), 0o644)) },
			`it holds a CDI spec of kind "nvidia.com/gpu", not "intel.com/gpu"`},
		{"a char device like /dev/null, made with mknod", func(t *testing.T, p string) {
			if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
				testenv.Unavailable(t, "cannot mknod(2) a char device here (needs root or CAP_MKNOD): %v", err)
			}
		}, "it is a character device (1:3)"},
	}
	for _, gpus := range []struct {
		name    string
		fixture func(*fakenode.Node) error
	}{
		{"with a GPU", fakenode.IGPU},
		{"without a GPU", func(*fakenode.Node) error { return nil }},
	} {
		for _, o := range occupants {
			t.Run(gpus.name+", "+o.name+" is refused and left alone", func(t *testing.T) {
				n := node(t, gpus.fixture)
				dir := shortDir(t)
				p := filepath.Join(dir, "intel.com-gpu.yaml")
				o.make(t, p)
				before := lstat(t, p)
				r := run(t, args([]string{"generate", "--output", p}, roots(n))...)
				if r.code != 1 || r.stdout != "" {
					t.Errorf("exit %d, stdout %q; want 1 and nothing", r.code, r.stdout)
				}
				want := "intel-gpu-cdi: --output: refusing to write to " + p + ": " + o.wantErr
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr %q, want %q", r.stderr, want)
				}
				if after := lstat(t, p); !after.same(before) {
					t.Errorf("%s changed: %+v, was %+v", p, after, before)
				}
				if entries, _ := os.ReadDir(dir); len(entries) != 1+btoi(strings.HasPrefix(o.name, "a symlink")) {
					t.Errorf("the directory holds %v", entries)
				}
			})
		}
	}
}

func TestGenerateOutputNameAndFormat(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		flags   []string
		wantErr string
	}{
		{name: "a .yml file: runtimes skip it", file: "intel.com-gpu.yml",
			wantErr: "ends in .yml: CDI runtimes read only .json and .yaml spec files"},
		{name: "a .txt file", file: "spec.txt", wantErr: "ends in .txt: CDI runtimes read only .json and .yaml spec files"},
		{name: "a .JSON file: runtimes match the extension exactly", file: "spec.JSON", wantErr: "ends in .JSON: CDI runtimes read only"},
		{name: "a name without an extension", file: "spec", wantErr: "has no extension: CDI runtimes read only .json and .yaml spec files"},
		{name: "--format json for a .yaml file", file: "intel.com-gpu.yaml", flags: []string{"--format", "json"},
			wantErr: "--format json contradicts --output"},
		{name: "--format yaml for a .json file", file: "intel.com-gpu.json", flags: []string{"--format", "yaml"},
			wantErr: "runtimes read a .json file as json"},
		{name: "an empty --output", flags: []string{"--output", ""}, wantErr: "--output: must not be empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name+" is refused, nothing written", func(t *testing.T) {
			n := node(t, fakenode.IGPU)
			dir := t.TempDir()
			a := args([]string{"generate"}, roots(n), tt.flags)
			if tt.file != "" {
				a = append(a, "--output", filepath.Join(dir, tt.file))
			}
			r := run(t, a...)
			if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, tt.wantErr) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit 1, nothing on stdout, %q", r.code, r.stdout, r.stderr, tt.wantErr)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("written: %v", entries)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestGenerateRefusesANullDevice is the case of the issue: as root,
// `generate -o /dev/null` replaced the host's /dev/null with a regular
// file. Here on a char device 1:3 made in a temp dir, never the host's.
func TestGenerateRefusesANullDevice(t *testing.T) {
	n := node(t, fakenode.IGPU)
	null := filepath.Join(t.TempDir(), "null")
	if err := unix.Mknod(null, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		testenv.Unavailable(t, "cannot mknod(2) a char device here (needs root or CAP_MKNOD): %v", err)
	}
	before := lstat(t, null)
	r := run(t, args([]string{"generate", "-o", null}, roots(n))...)
	want := "intel-gpu-cdi: --output: refusing to write to " + null + ": it is a character device (1:3)\n"
	if r.code != 1 || r.stdout != "" || r.stderr != want {
		t.Errorf("exit %d, stdout %q, stderr %q; want 1, nothing, %q", r.code, r.stdout, r.stderr, want)
	}
	if after := lstat(t, null); !after.same(before) || after.st.Mode&unix.S_IFMT != unix.S_IFCHR {
		t.Errorf("%s is no longer the char device it was", null)
	}
}
