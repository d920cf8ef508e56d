package spec

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"
)

// ErrNotOwned is matched (errors.Is) by every refusal to replace or remove
// a path that does not hold a spec of the kind being written.
var ErrNotOwned = errors.New("not a CDI spec of this kind")

// NotOwnedError is the refusal to replace or remove what is at Path. The
// writer runs as root on a host: a path given by mistake may name a device
// node, a FIFO or someone else's file, and renaming over it would destroy it.
type NotOwnedError struct {
	// Op is what was refused: "write to" or "remove".
	Op   string
	Path string
	// Found says what is there, as the end of a sentence starting "it":
	// `is a directory`, `holds a CDI spec of kind "nvidia.com/gpu", not "intel.com/gpu"`.
	Found string
}

func (e *NotOwnedError) Error() string {
	return fmt.Sprintf("refusing to %s %s: it %s", e.Op, e.Path, e.Found)
}

// Is makes errors.Is(err, ErrNotOwned) true.
func (e *NotOwnedError) Is(target error) bool { return target == ErrNotOwned }

// maxSpecSize bounds what is read of an existing file to decide whether it
// is a spec: a spec of hundreds of GPUs is a few hundred KiB, and a huge
// file in the spec's place is not ours whatever it holds.
const maxSpecSize = 16 << 20

// CheckOwner reports whether Write may replace path with a spec of kind:
// it may when nothing is there (exists is false) or when path is a regular
// file, not a symlink, that already holds a CDI spec of that kind. Anything
// else is a *NotOwnedError; other errors (a parent that is not a
// directory, no permission) are returned as they are.
func CheckOwner(path, kind string) (exists bool, err error) {
	return checkOwner("write to", path, kind)
}

func checkOwner(op, path, kind string) (bool, error) {
	refuse := func(format string, args ...any) error {
		return &NotOwnedError{Op: op, Path: path, Found: fmt.Sprintf(format, args...)}
	}
	var st unix.Stat_t
	if err := ignoringEINTR(func() error { return unix.Lstat(path, &st) }); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, &fs.PathError{Op: "lstat", Path: path, Err: err}
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFLNK:
		// Following the link would write wherever it leads, which the
		// caller never named; the real path says what is meant.
		target, err := os.Readlink(path)
		if err != nil {
			target = "?"
		}
		return true, refuse("is a symbolic link to %s: give the path of the file itself", target)
	case unix.S_IFDIR:
		return true, refuse("is a directory")
	case unix.S_IFCHR:
		return true, refuse("is a character device (%d:%d)", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	case unix.S_IFBLK:
		return true, refuse("is a block device (%d:%d)", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	case unix.S_IFIFO:
		return true, refuse("is a named pipe (FIFO)")
	case unix.S_IFSOCK:
		return true, refuse("is a socket")
	default:
		return true, refuse("is not a regular file (mode %#o)", st.Mode&unix.S_IFMT)
	}
	if st.Size > maxSpecSize {
		return true, refuse("is a file of %d bytes, larger than any CDI spec", st.Size)
	}
	data, err := readRegular(path)
	if err != nil {
		var nr notRegularError
		if errors.As(err, &nr) {
			// Swapped between the lstat and the open: refuse, do not guess.
			return true, refuse("changed while being read: %v", err)
		}
		return true, err
	}
	raw, err := cdiapi.ParseSpec(data)
	switch {
	case err != nil:
		return true, refuse("is not a CDI spec (%v)", err)
	case raw == nil || raw.Kind == "" || raw.Version == "":
		return true, refuse("is not a CDI spec (no cdiVersion and kind)")
	case raw.Kind != kind:
		return true, refuse("holds a CDI spec of kind %q, not %q", raw.Kind, kind)
	}
	return true, nil
}

type notRegularError struct{ path string }

func (e notRegularError) Error() string { return e.path + " is no longer a regular file" }

// readRegular reads a file that must be regular. O_NOFOLLOW and O_NONBLOCK
// keep a symlink or FIFO swapped in after the lstat from being followed or
// blocking the open; the fstat catches any other swap.
func readRegular(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, notRegularError{path}
		}
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, notRegularError{path}
	}
	data, err := io.ReadAll(io.LimitReader(f, maxSpecSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return data, nil
}

func ignoringEINTR(f func() error) error {
	for {
		if err := f(); err != unix.EINTR {
			return err
		}
	}
}
