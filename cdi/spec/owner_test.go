package spec_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/spec"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/testenv"
)

// snapshot is what a refused write or removal must leave exactly as it
// was: the directory entry (inode, type, device number, size, times) and
// what it holds or names.
type snapshot struct {
	ino, rdev   uint64
	mode        uint32
	size        int64
	mtime       unix.Timespec
	content     []byte
	linkTarget  string
	description string
}

func snap(t *testing.T, p string) snapshot {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	s := snapshot{ino: st.Ino, rdev: st.Rdev, mode: st.Mode, size: st.Size, mtime: st.Mtim}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		s.content = data
	case unix.S_IFLNK:
		target, err := os.Readlink(p)
		if err != nil {
			t.Fatal(err)
		}
		s.linkTarget = target
	}
	return s
}

func (s snapshot) equal(o snapshot) bool {
	return s.ino == o.ino && s.rdev == o.rdev && s.mode == o.mode && s.size == o.size &&
		s.mtime == o.mtime && bytes.Equal(s.content, o.content) && s.linkTarget == o.linkTarget
}

func (s snapshot) String() string {
	return fmt.Sprintf("ino %d mode %#o rdev %d size %d mtime %v content %q link %q",
		s.ino, s.mode, s.rdev, s.size, s.mtime, s.content, s.linkTarget)
}

// occupant puts something at p that is not ours to replace.
type occupant struct {
	name    string
	make    func(t *testing.T, p string)
	wantErr string // what the refusal must say is there
}

func writeFile(content string) func(*testing.T, string) {
	return func(t *testing.T, p string) {
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func occupants(t *testing.T) []occupant {
	ours := ourSpecYAML(t)
	theirs := strings.Replace(ours, "kind: intel.com/gpu", "kind: nvidia.com/gpu", 1)
	return []occupant{
		{name: "a directory", make: func(t *testing.T, p string) {
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}, wantErr: "it is a directory"},
		{name: "a FIFO", make: func(t *testing.T, p string) {
			if err := unix.Mkfifo(p, 0o644); err != nil {
				t.Fatal(err)
			}
		}, wantErr: "it is a named pipe (FIFO)"},
		{name: "a unix socket", make: func(t *testing.T, p string) {
			l, err := net.Listen("unix", p)
			if err != nil {
				t.Fatal(err)
			}
			// Closing would unlink it; keep the file for the test.
			l.(*net.UnixListener).SetUnlinkOnClose(false)
			t.Cleanup(func() { l.Close() })
		}, wantErr: "it is a socket"},
		{name: "a symlink to a spec of ours", make: func(t *testing.T, p string) {
			real := filepath.Join(filepath.Dir(p), "real.yaml")
			writeFile(ours)(t, real)
			if err := os.Symlink("real.yaml", p); err != nil {
				t.Fatal(err)
			}
		}, wantErr: "it is a symbolic link to real.yaml: give the path of the file itself"},
		{name: "a dangling symlink", make: func(t *testing.T, p string) {
			if err := os.Symlink("/nonexistent/spec.yaml", p); err != nil {
				t.Fatal(err)
			}
		}, wantErr: "it is a symbolic link to /nonexistent/spec.yaml"},
		{name: "a text file that is not a CDI spec", make: writeFile("# my notes\n- one\n"), wantErr: "it is not a CDI spec"},
		{name: "an empty file", make: writeFile(""), wantErr: "it is not a CDI spec"},
		{name: "YAML without cdiVersion and kind", make: writeFile("devices: []\n"), wantErr: "it is not a CDI spec (no cdiVersion and kind)"},
		{name: "a file larger than any spec", make: func(t *testing.T, p string) {
			writeFile(ours)(t, p)
			if err := os.Truncate(p, 17<<20); err != nil {
				t.Fatal(err)
			}
		}, wantErr: "larger than any CDI spec"},
		{name: "another vendor's spec", make: writeFile(theirs), wantErr: `it holds a CDI spec of kind "nvidia.com/gpu", not "intel.com/gpu"`},
		{name: "a char device made with mknod", make: func(t *testing.T, p string) {
			if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
				testenv.Unavailable(t, "cannot mknod(2) a char device here (needs root or CAP_MKNOD): %v", err)
			}
		}, wantErr: "it is a character device (1:3)"},
	}
}

func ourSpecYAML(t testing.TB) string {
	data, err := spec.Marshal(igpuSpec(t), spec.FormatYAML)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestOnlyOurOwnSpecIsReplacedOrRemoved puts each kind of thing at the
// output path and checks that Write and RemoveStale refuse it with an error
// naming the path and what is there, and leave it exactly as it was.
func TestOnlyOurOwnSpecIsReplacedOrRemoved(t *testing.T) {
	for _, o := range occupants(t) {
		for _, op := range []struct {
			name string
			run  func(p string) error
		}{
			{"Write", func(p string) error { return spec.Write(p, igpuSpec(t), spec.FormatYAML) }},
			{"RemoveStale", func(p string) error {
				removed, err := spec.RemoveStale(p, "intel.com/gpu")
				if removed {
					return errors.New("removed")
				}
				return err
			}},
			{"CheckOwner", func(p string) error {
				exists, err := spec.CheckOwner(p, "intel.com/gpu")
				if !exists {
					return errors.New("reported as absent")
				}
				return err
			}},
		} {
			t.Run(op.name+" refuses "+o.name, func(t *testing.T) {
				// A short directory: a socket path must fit 108 bytes.
				dir, err := os.MkdirTemp("", "own")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { os.RemoveAll(dir) })
				p := filepath.Join(dir, "intel.com-gpu.yaml")
				o.make(t, p)
				before := snap(t, p)
				entries, _ := os.ReadDir(dir)

				err = op.run(p)
				var no *spec.NotOwnedError
				if !errors.Is(err, spec.ErrNotOwned) || !errors.As(err, &no) {
					t.Fatalf("error %v, want a NotOwnedError", err)
				}
				if !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), o.wantErr) {
					t.Errorf("error %q, want it to name %s and say %q", err, p, o.wantErr)
				}
				if after := snap(t, p); !after.equal(before) {
					t.Errorf("the path changed:\nbefore %v\nafter  %v", before, after)
				}
				if after, _ := os.ReadDir(dir); len(after) != len(entries) {
					t.Errorf("the directory held %d entries, now %d: %v", len(entries), len(after), after)
				}
			})
		}
	}
}

func TestCheckOwnerAllowsNothingOrOurOwnSpec(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing", "intel.com-gpu.yaml")
	if exists, err := spec.CheckOwner(missing, "intel.com/gpu"); exists || err != nil {
		t.Errorf("CheckOwner(missing) = %v, %v; want false, nil", exists, err)
	}
	ours := filepath.Join(dir, "intel.com-gpu.yaml")
	writeFile(ourSpecYAML(t))(t, ours)
	if exists, err := spec.CheckOwner(ours, "intel.com/gpu"); !exists || err != nil {
		t.Errorf("CheckOwner(our spec) = %v, %v; want true, nil", exists, err)
	}
	t.Run("a parent that is a file is an error, but no refusal of ownership", func(t *testing.T) {
		_, err := spec.CheckOwner(filepath.Join(ours, "x.yaml"), "intel.com/gpu")
		if err == nil || errors.Is(err, spec.ErrNotOwned) || !errors.Is(err, unix.ENOTDIR) {
			t.Errorf("error %v, want ENOTDIR", err)
		}
	})
}
