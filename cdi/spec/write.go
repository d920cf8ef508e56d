package spec

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"
	specs "tags.cncf.io/container-device-interface/specs-go"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/atomicfile"
)

// Format is a spec encoding.
type Format string

// Spec encodings.
const (
	FormatJSON Format = "json"
	FormatYAML Format = "yaml"
)

// ParseFormat checks a --format value.
func ParseFormat(s string) (Format, error) {
	switch f := Format(strings.ToLower(s)); f {
	case FormatJSON, FormatYAML:
		return f, nil
	case "yml":
		return FormatYAML, nil
	}
	return "", fmt.Errorf("invalid spec format %q: want %q or %q", s, FormatJSON, FormatYAML)
}

// ErrExtension is matched (errors.Is) when a spec file's name ends in an
// extension CDI runtimes do not read.
var ErrExtension = errors.New("CDI runtimes read only .json and .yaml spec files")

// FormatOf returns the encoding a spec file must have for CDI runtimes to
// read it, which they choose by the extension, exactly .json or .yaml: a
// spec named anything else (.yml, .JSON, no extension) is silently ignored.
func FormatOf(path string) (Format, error) {
	switch ext := filepath.Ext(path); ext {
	case ".json":
		return FormatJSON, nil
	case ".yaml":
		return FormatYAML, nil
	case "":
		return "", fmt.Errorf("%s has no extension: %w", path, ErrExtension)
	default:
		return "", fmt.Errorf("%s ends in %s: %w", path, ext, ErrExtension)
	}
}

// Mode is the permission every spec file ends with: runtimes that run
// rootless (podman, docker) must be able to read it.
const Mode fs.FileMode = 0o644

// dirMode is the permission of a spec directory this package creates.
const dirMode fs.FileMode = 0o755

// tempPrefix starts the name of every temporary file the writer makes, so
// that leftovers of a killed writer can be found and removed.
const tempPrefix = ".intel-gpu-cdi-"

// Write encodes the spec with Marshal, which refuses a spec the CDI
// library would refuse, and writes it to path atomically: a temporary
// file in the same directory, fsynced, made 0644, then renamed over path.
// It writes only where CheckOwner allows: nothing at path, or a spec of
// the same kind; anything else is refused with a *NotOwnedError. On any
// error path is left as it was. The parent directory is created 0755 when
// missing.
func Write(path string, s *specs.Spec, f Format) error {
	data, err := Marshal(s, f)
	if err != nil {
		return err
	}
	if _, err := CheckOwner(path, s.Kind); err != nil {
		return err
	}
	return WriteEncoded(path, data)
}

// WriteEncoded is Write for a spec that Marshal already encoded, without
// the ownership check: for a caller that owns path by other means (the
// plugin's own file in its own spec directory). data must be Marshal's:
// it is not checked again.
func WriteEncoded(path string, data []byte) error {
	return WriteEncodedFrom(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteEncodedFrom is WriteEncoded of what encode writes, which must be
// Encode's output: the spec goes to the file as it is encoded, never
// whole in memory.
func WriteEncodedFrom(path string, encode func(io.Writer) error) error {
	dir := filepath.Dir(path)
	if err := mkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("creating CDI spec directory %s: %w", dir, err)
	}
	err := atomicfile.WriteFrom(path, tempPrefix+filepath.Base(path)+".*", encode, Mode)
	if err != nil {
		return fmt.Errorf("writing CDI spec %s: %w", path, err)
	}
	return nil
}

// mkdirAll is os.MkdirAll whose new directories get exactly perm: the
// umask would otherwise decide, and under umask 077 a runtime running as
// another user could not enter the spec directory. Directories that exist
// are left as they are.
func mkdirAll(dir string, perm fs.FileMode) error {
	fi, err := os.Stat(dir)
	switch {
	case err == nil && fi.IsDir():
		return nil
	case err == nil:
		return &fs.PathError{Op: "mkdir", Path: dir, Err: syscall.ENOTDIR}
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	if parent := filepath.Dir(dir); parent != dir {
		if err := mkdirAll(parent, perm); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, perm); err != nil {
		// Another writer may have created it meanwhile.
		if fi, statErr := os.Stat(dir); statErr == nil && fi.IsDir() {
			return nil
		}
		return err
	}
	return os.Chmod(dir, perm)
}

// Validate checks an encoded spec exactly as a runtime would read it: with
// the CDI library's strict parser and validation. It needs a scratch file,
// since the library validates only what it reads from disk, and allocates
// in proportion to the spec: the writers rely on Check instead, and the
// tests hold Check and the encoder to this.
func Validate(data []byte) error {
	tmp, err := atomicfile.WriteTemp(os.TempDir(), tempPrefix+"validate.*", data, Mode)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if _, err := cdiapi.ReadSpec(tmp, 0); err != nil {
		return fmt.Errorf("CDI spec rejected by the CDI library: %w", err)
	}
	return nil
}

// RemoveStale removes the spec at path if it is a spec of the given kind.
// A missing file is not an error; anything CheckOwner would not let Write
// replace (another kind's spec, a file that is not a spec, a symlink, a
// directory, a device node) is left alone and refused with a
// *NotOwnedError.
func RemoveStale(path, kind string) (removed bool, err error) {
	exists, err := checkOwner("remove", path, kind)
	if err != nil || !exists {
		return false, err
	}
	if err := os.Remove(path); err != nil {
		return false, fmt.Errorf("removing stale spec %s: %w", path, err)
	}
	return true, nil
}

// CleanTemp removes temporary files a killed writer left in dir and
// returns how many it removed. Only names this package creates are touched.
func CleanTemp(dir string) (int, error) { return atomicfile.CleanTemp(dir, tempPrefix) }
