package plugin_test

import (
	"os"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/deviceplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/plugintest"
)

// specWrites counts the spec writes a plugin makes.
type specWrites struct {
	nopObserver
	n atomic.Int64
}

func (w *specWrites) SpecWrite(error) { w.n.Add(1) }

type fileState struct {
	ino   uint64
	mode  os.FileMode
	bytes string
}

func stateOf(t *testing.T, path string) fileState {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return fileState{fi.Sys().(*syscall.Stat_t).Ino, fi.Mode(), string(b)}
}

// A plugin restarts with its spec still on disk (/var/run/cdi outlives the
// pod): when the node has not changed, the file is the spec it would write
// and is recognised as its own without being parsed, and kept as it is.
// Anything else about the file (its mode, its content) makes it check the
// file as before and write it again.
func TestARestartedPluginKeepsItsUnchangedSpecAndRewritesAnyOther(t *testing.T) {
	for _, tc := range []struct {
		name    string
		tamper  func(t *testing.T, path string)
		rewrite bool
	}{
		{"unchanged", func(*testing.T, string) {}, false},
		{"made unreadable to other users", func(t *testing.T, p string) { require.NoError(t, os.Chmod(p, 0o600)) }, true},
		{"a spec of ours that differs from what it would write", func(t *testing.T, p string) {
			b, err := os.ReadFile(p)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(p, append(b[:len(b)-1], ' ', '\n'), 0o644))
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := fakenode.NewT(t)
			node.MustApply(t, fakenode.IGPU)
			first := startRigOn(t, node)
			first.registered(deviceplugin.ResourceI915, 1)
			path := first.plugin.SpecPath()
			first.stop()
			written := stateOf(t, path)
			tc.tamper(t, path)
			before := stateOf(t, path)

			writes := &specWrites{}
			second := startRigOnSpecDir(t, node, first.specDir, plugintest.WithObserver(writes))
			second.registered(deviceplugin.ResourceI915, 1)
			after := stateOf(t, path)
			if !tc.rewrite {
				assert.Equal(t, before, after, "the spec was written again")
				assert.Zero(t, writes.n.Load(), "spec writes")
				return
			}
			assert.NotEqual(t, before.ino, after.ino, "the spec was not written again")
			assert.Equal(t, os.FileMode(0o644), after.mode.Perm())
			assert.Equal(t, written.bytes, after.bytes, "the rewritten spec is not the one the node gives")
			assert.Equal(t, int64(1), writes.n.Load(), "spec writes")
		})
	}
}

// startRigOnSpecDir is startRigOn with the spec directory of an earlier
// rig, as a restarted plugin finds it.
func startRigOnSpecDir(t *testing.T, node *fakenode.Node, dir string, opts ...plugintest.Option) *rig {
	t.Helper()
	r := startRigOn(t, node, append([]plugintest.Option{plugintest.WithCDISpecDir(dir)}, opts...)...)
	r.specDir = dir
	return r
}
