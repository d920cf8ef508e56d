package health

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/atomicfile"
)

// A wedge is known only from its uevent, and an AER baseline only from the
// moment the Monitor first read the counters: a plugin restart (a crash, a
// DaemonSet rollout) would forget both and report a dead GPU Healthy. With
// a state file the Monitor keeps them across restarts. Each entry carries
// the binding it belongs to, so an entry whose GPU was rebound while no
// Monitor ran is dropped at the first Check, and the boot it was written
// in, so a file that outlived a reboot (inode numbers start again) is
// ignored whole.

// stateVersion is the state file's format.
const stateVersion = 1

// bootIDFile identifies the running boot.
const bootIDFile = "/proc/sys/kernel/random/boot_id"

// stateFile is what is kept on disk.
type stateFile struct {
	Version int                 `json:"version"`
	BootID  string              `json:"bootID"`
	GPUs    map[string]savedGPU `json:"gpus"`
}

// savedGPU is the part of a gpuState worth keeping.
type savedGPU struct {
	FunctionInode  uint64   `json:"functionInode"`
	CardInode      uint64   `json:"cardInode"`
	Wedged         []string `json:"wedged,omitempty"`
	WedgedCard     string   `json:"wedgedCard,omitempty"`
	Task           string   `json:"task,omitempty"`
	RecoveryFailed bool     `json:"recoveryFailed,omitempty"`
	AERBase        *AER     `json:"aerBase,omitempty"`
}

func bootID() string {
	b, err := os.ReadFile(bootIDFile)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// checkStateFile refuses a state file path that holds something this
// package did not write: the Monitor replaces the file by renaming over
// it, which would destroy a device node, a FIFO, a link's target's name or
// someone's file. Absent, or a regular file with a state file's shape (of
// any version or boot, which loadState then ignores), is fine.
func checkStateFile(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("health state file %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("health state file %s is a %s, not a file this plugin wrote: refusing to replace it", path, fileKind(fi.Mode()))
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("health state file %s: %w", path, err)
	}
	var shape struct {
		Version *int            `json:"version"`
		GPUs    json.RawMessage `json:"gpus"`
	}
	if json.Unmarshal(b, &shape) != nil || shape.Version == nil || shape.GPUs == nil {
		return fmt.Errorf("health state file %s holds something else than a health state file: refusing to replace it", path)
	}
	return nil
}

// fileKind names a file mode's type for a message.
func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	case m.IsDir():
		return "directory"
	case m&fs.ModeNamedPipe != 0:
		return "FIFO"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeCharDevice != 0:
		return "char device"
	case m&fs.ModeDevice != 0:
		return "block device"
	}
	return "special file"
}

// loadState reads the state file into m.gpus. A missing file is no state;
// a malformed one, or one from another boot, is logged and ignored, since
// the plugin must start either way.
func (m *Monitor) loadState() {
	path := m.cfg.stateFile
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		m.log.Warn("cannot read the health state file; starting without it", "path", path, "err", err)
		return
	}
	var f stateFile
	if err := json.Unmarshal(b, &f); err != nil || f.Version != stateVersion {
		m.log.Warn("ignoring a malformed health state file", "path", path, "version", f.Version, "err", err)
		return
	}
	if boot := bootID(); f.BootID != boot {
		m.log.Info("ignoring a health state file from another boot", "path", path)
		return
	}
	for pci, g := range f.GPUs {
		if len(m.gpus) >= maxTracked || g.FunctionInode == 0 || g.CardInode == 0 {
			continue
		}
		st := &gpuState{
			binding:        binding{fn: g.FunctionInode, card: g.CardInode},
			wedged:         g.Wedged,
			wedgedCard:     g.WedgedCard,
			task:           g.Task,
			recoveryFailed: g.RecoveryFailed,
		}
		if g.Wedged != nil && st.wedged == nil {
			st.wedged = []string{}
		}
		if g.AERBase != nil {
			st.aerBase, st.hasAERBase = *g.AERBase, true
		}
		m.gpus[pci] = st
	}
}

// snapshot is the state file's content at one moment, numbered so that a
// slow writer cannot put an older one over a newer one.
type snapshot struct {
	seq  uint64
	data []byte
}

// snapshotState renders what the state file should hold; m.mu is held. It
// keeps only GPUs whose binding is fully known: without it an entry could
// not be told stale later. Without a state file it is empty.
func (m *Monitor) snapshotState() snapshot {
	if m.cfg.stateFile == "" || m.cfg.stateReadOnly {
		return snapshot{}
	}
	m.snapSeq++
	f := stateFile{Version: stateVersion, BootID: m.boot, GPUs: make(map[string]savedGPU, len(m.gpus))}
	for pci, st := range m.gpus {
		if st.binding.fn == 0 || st.binding.card == 0 {
			continue
		}
		if st.wedged == nil && !st.recoveryFailed && !st.hasAERBase {
			continue
		}
		g := savedGPU{
			FunctionInode: st.binding.fn, CardInode: st.binding.card,
			Wedged: st.wedged, WedgedCard: st.wedgedCard, Task: st.task, RecoveryFailed: st.recoveryFailed,
		}
		if st.hasAERBase {
			base := st.aerBase
			g.AERBase = &base
		}
		f.GPUs[pci] = g
	}
	b, err := json.MarshalIndent(&f, "", "  ")
	if err != nil {
		// Nothing in stateFile can fail to marshal.
		panic(fmt.Sprintf("health: marshalling the state file: %v", err))
	}
	return snapshot{seq: m.snapSeq, data: b}
}

// saveState writes the state file when it would change. Callers snapshot
// under m.mu and call this without it: the write may wait for the disk.
func (m *Monitor) saveState(s snapshot) {
	if s.data == nil {
		return
	}
	m.saveMu.Lock()
	defer m.saveMu.Unlock()
	if s.seq <= m.savedSeq || string(s.data) == string(m.saved) {
		return
	}
	path := m.cfg.stateFile
	if err := checkStateFile(path); err != nil {
		m.log.Warn("cannot write the health state file", "path", path, "err", err)
		return
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		m.log.Warn("cannot write the health state file", "path", path, "err", err)
		return
	}
	if err := atomicfile.Write(path, ".health-state-*", s.data, 0o644); err != nil {
		m.log.Warn("cannot write the health state file", "path", path, "err", err)
		return
	}
	m.saved, m.savedSeq = s.data, s.seq
}
