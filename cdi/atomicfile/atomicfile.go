// Package atomicfile writes files that a reader sees whole or not at all:
// the data goes to a temporary file in the same directory, is fsynced and
// given its mode, and is renamed over the target. Temporary files carry a
// prefix so that the leftovers of a killed writer can be found.
package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// WriteTemp writes data to a new file in dir named by pattern (as
// os.CreateTemp takes it), fsynced and with mode perm, and returns its
// name. On error nothing is left behind.
func WriteTemp(dir, pattern string, data []byte, perm fs.FileMode) (string, error) {
	return writeTempFrom(dir, pattern, writeAll(data), perm)
}

// writeTempFrom is WriteTemp of what write writes to the file: for data
// made as it is written, never whole in memory. An error of write is
// returned wrapped, and nothing is left behind.
func writeTempFrom(dir, pattern string, write func(io.Writer) error, perm fs.FileMode) (string, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return "", fmt.Errorf("creating temporary file in %s: %w", dir, err)
	}
	name := f.Name()
	err = write(f)
	if err == nil {
		// Chmod on the open file: the umask does not apply.
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return "", fmt.Errorf("writing temporary file %s: %w", name, err)
	}
	return name, nil
}

// Write replaces path with data, atomically. The temporary file is named
// by pattern in path's directory. On any error path is left as it was and
// no temporary file remains.
func Write(path, pattern string, data []byte, perm fs.FileMode) error {
	return WriteFrom(path, pattern, writeAll(data), perm)
}

func writeAll(data []byte) func(io.Writer) error {
	return func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	}
}

// WriteFrom is Write of what write writes to the temporary file.
func WriteFrom(path, pattern string, write func(io.Writer) error, perm fs.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := writeTempFrom(dir, pattern, write, perm)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("renaming into %s: %w", path, err)
	}
	// The rename is durable only once the directory entry is on disk.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// CleanTemp removes the regular files in dir whose names start with prefix
// (what a killed writer left) and returns how many it removed. A missing
// dir has none.
func CleanTemp(dir, prefix string) (int, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", dir, err)
	}
	n := 0
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), prefix) || !e.Type().IsRegular() {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return n, fmt.Errorf("removing leftover %s: %w", e.Name(), err)
		}
		n++
	}
	return n, nil
}
