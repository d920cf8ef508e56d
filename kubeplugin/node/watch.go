package node

import (
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/dirwatch"
)

// devWatch follows the directories where GPU nodes come and go: the dev
// root (for dri itself being created or removed: devtmpfs removes /dev/dri
// with the last DRM node, e.g. when a driver is unloaded, and creates it
// again with the next), <dev-root>/dri (the nodes) and dri/by-path (the
// links udev adds after the nodes). Each directory is watched from the
// moment it exists, so no removal and re-creation is missed.
type devWatch struct {
	w *dirwatch.Follower
	// own is the watcher made for this one when none was shared.
	own     *dirwatch.Watcher
	log     *slog.Logger
	devRoot string
	dri     string
	byPath  string
}

// newDevWatch follows the dev root through shared, or through a watcher
// of its own when shared is nil.
func newDevWatch(devRoot string, shared *dirwatch.Watcher, log *slog.Logger) (*devWatch, error) {
	d := &devWatch{log: log, devRoot: filepath.Clean(devRoot)}
	if shared == nil {
		var err error
		if d.own, err = dirwatch.New(); err != nil {
			return nil, err
		}
		shared = d.own
	}
	d.w = shared.Follow()
	d.dri = filepath.Join(d.devRoot, "dri")
	d.byPath = filepath.Join(d.dri, "by-path")
	if err := d.w.Add(d.devRoot); err != nil {
		d.close()
		return nil, fmt.Errorf("watching dev root %s: %w", d.devRoot, err)
	}
	d.addDRI()
	return d, nil
}

func (d *devWatch) events() <-chan fsnotify.Event { return d.w.Events() }
func (d *devWatch) errors() <-chan error          { return d.w.Errors() }

func (d *devWatch) close() {
	d.w.Close()
	if d.own != nil {
		d.own.Close()
	}
}

// addDRI watches dri and by-path when they exist. A directory that is not
// there yet is watched once its parent reports it.
func (d *devWatch) addDRI() {
	if d.w.Add(d.dri) == nil {
		_ = d.w.Add(d.byPath)
	}
}

// handle takes one event and reports whether it can change the GPUs.
func (d *devWatch) handle(ev fsnotify.Event) bool {
	dir := filepath.Dir(ev.Name)
	switch {
	case dir == d.devRoot:
		// Other device nodes come and go in the dev root all the time;
		// only dri matters.
		if ev.Name != d.dri {
			return false
		}
		if ev.Has(fsnotify.Create) {
			d.addDRI()
		} else {
			d.forget(d.dri)
		}
		return true
	case dir == d.dri && ev.Name == d.byPath:
		if ev.Has(fsnotify.Create) {
			_ = d.w.Add(d.byPath)
		} else {
			d.forget(d.byPath)
		}
		return true
	}
	return true
}

// forget drops the watch of a directory that was removed or renamed. A
// removed directory's watch is gone already; a renamed one would go on
// reporting from its new place.
func (d *devWatch) forget(dir string) {
	_ = d.w.Remove(dir)
	if dir == d.dri {
		_ = d.w.Remove(d.byPath)
	}
}

// devView remembers whether <dev-root>/dri was a mount of another file
// system when the node started, as it is in a container that mounts the
// host's /dev/dri. When the host removes that directory the kernel
// detaches the mount, the container is left with the empty directory
// beneath it, and the host's new /dev/dri can never be seen from here.
type devView struct {
	dri     string
	devRoot string
	mount   bool
}

func newDevView(devRoot string) devView {
	v := devView{devRoot: filepath.Clean(devRoot), dri: filepath.Join(devRoot, "dri")}
	var root, dri unix.Stat_t
	if unix.Stat(v.devRoot, &root) == nil && unix.Stat(v.dri, &dri) == nil {
		v.mount = root.Dev != dri.Dev
	}
	return v
}

// stale returns why this process no longer sees the host's device nodes,
// or "" when it does.
func (v devView) stale() string {
	if !v.mount {
		return ""
	}
	var root, dri unix.Stat_t
	if err := unix.Stat(v.devRoot, &root); err != nil {
		return fmt.Sprintf("dev root %s: %v", v.devRoot, err)
	}
	err := unix.Stat(v.dri, &dri)
	if err == nil && dri.Dev != root.Dev {
		return ""
	}
	return fmt.Sprintf("%s was a mount of the host's device directory and is no more "+
		"(the host removed the directory, which detaches every mount of it): "+
		"new GPU nodes cannot be seen until this process is restarted", v.dri)
}
