package nfd_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/nfd"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitFor = 10 * time.Second

// running starts w.Run and stops it when the test ends; the returned
// function stops it earlier.
func running(t *testing.T, w *nfd.Writer) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx)
	}()
	stop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(waitFor):
			t.Fatal("Run did not return after its context ended")
		}
	}
	t.Cleanup(stop)
	return stop
}

// eventually waits until the file reads want ("" for no file).
func eventually(t *testing.T, path, want string) {
	t.Helper()
	var got string
	ok := assert.Eventually(t, func() bool {
		b, err := os.ReadFile(path)
		got = string(b)
		if os.IsNotExist(err) {
			got = ""
		}
		return got == want
	}, waitFor, time.Millisecond)
	if !ok {
		t.Fatalf("%s reads %q, want %q", path, got, want)
	}
}

func content(devs ...discovery.Device) string { return string(nfd.Render(nfd.Labels(devs))) }

func TestWriterFollowsUpdatesAndRemovesTheFileWhenStopped(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "features.d")
	w, err := nfd.New(dir)
	require.NoError(t, err)
	assert.DirExists(t, dir, "New creates the directory")
	assert.Equal(t, filepath.Join(dir, "intel-gpu-cdi"), w.Path())
	stop := running(t, w)

	one := gpu("0000:00:02.0", "0x46a6", "i915", -1)
	two := gpu("0000:03:00.0", "0x56a0", "i915", 0)
	w.Update([]discovery.Device{one})
	eventually(t, w.Path(), content(one))
	st, err := os.Stat(w.Path())
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), st.Mode().Perm())

	w.Update([]discovery.Device{one, two})
	eventually(t, w.Path(), content(one, two))

	w.Update(nil)
	eventually(t, w.Path(), "")

	w.Update([]discovery.Device{two})
	eventually(t, w.Path(), content(two))
	stop()
	assert.NoFileExists(t, w.Path())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "no temporary file is left")
}

func TestWriterRemovesWhatACrashedRunLeft(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "intel-gpu-cdi")
	temp := filepath.Join(dir, ".intel-gpu-cdi.tmp-123")
	other := filepath.Join(dir, "someone-else")
	for _, p := range []string{stale, temp, other} {
		require.NoError(t, os.WriteFile(p, []byte("gpu.intel.com/count=8\n"), 0o644))
	}
	w, err := nfd.New(dir)
	require.NoError(t, err)
	running(t, w)

	eventually(t, stale, "")
	eventually(t, temp, "")
	assert.FileExists(t, other, "other feature files are not ours to touch")
}

func TestWriterRetriesAFailedWrite(t *testing.T) {
	dir := t.TempDir()
	w, err := nfd.New(dir)
	require.NoError(t, err)
	// A directory in the file's place makes the rename fail until it goes.
	blocker := filepath.Join(w.Path(), "x")
	require.NoError(t, os.MkdirAll(blocker, 0o755))
	running(t, w)

	one := gpu("0000:00:02.0", "0x46a6", "i915", -1)
	w.Update([]discovery.Device{one})
	time.Sleep(50 * time.Millisecond)
	assert.DirExists(t, w.Path())
	require.NoError(t, os.RemoveAll(w.Path()))
	eventually(t, w.Path(), content(one))
}

func TestNewRefusesADirectoryItCannotHave(t *testing.T) {
	_, err := nfd.New("")
	assert.Error(t, err)

	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	_, err = nfd.New(file)
	assert.Error(t, err, "a file is no directory")
	_, err = nfd.New(filepath.Join(file, "sub"))
	assert.Error(t, err)
}
