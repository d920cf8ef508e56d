package health_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health/uevent"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

// restart builds a second Monitor on the rig's node and state file, as a
// restarted plugin does; it does not listen.
func restart(t *testing.T, r *rig, state string, logs *strings.Builder) *health.Monitor {
	t.Helper()
	opts := []health.Option{health.WithSysfsRoot(r.n.Sys), health.WithStateFile(state)}
	if logs != nil {
		opts = append(opts, health.WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	}
	m, err := health.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func checkOne(t *testing.T, m *health.Monitor, n *fakenode.Node, pci string) health.Status {
	t.Helper()
	for _, s := range m.Check(scan(t, n)) {
		if s.PCIAddress == pci {
			return s
		}
	}
	t.Fatalf("%s not found", pci)
	return health.Status{}
}

func TestAStateFileKeepsWhatOnlyTheMonitorKnowsAcrossARestart(t *testing.T) {
	t.Run("a wedge, until the GPU is rebound while no Monitor runs", func(t *testing.T) {
		state := filepath.Join(t.TempDir(), "run", "health.json")
		r := newRig(t, discreteXe, health.WithStateFile(state))
		wantHealthy(t, r.status(t, xe))
		r.feed.send(t, r.must(r.n.WedgedEvent(xe, "rebind", "TASK=vkcube")), nil)
		wantUnhealthy(t, r.status(t, xe), health.ReasonWedged)
		r.stop()

		s := checkOne(t, restart(t, r, state, nil), r.n, xe)
		wantUnhealthy(t, s, health.ReasonWedged)
		if !strings.Contains(s.Message, "vkcube") {
			t.Errorf("message %q lost the task", s.Message)
		}
		wantHealthy(t, checkOne(t, restart(t, r, state, nil), r.n, igpu))

		if err := r.n.RebindGPU(xe); err != nil {
			t.Fatal(err)
		}
		m := restart(t, r, state, nil)
		wantHealthy(t, checkOne(t, m, r.n, xe))
		// And the file no longer holds the wedge.
		wantHealthy(t, checkOne(t, restart(t, r, state, nil), r.n, xe))
	})

	t.Run("a fatal PCIe error, counted from the binding's first reading", func(t *testing.T) {
		state := filepath.Join(t.TempDir(), "health.json")
		r := newRig(t, discreteXe, health.WithStateFile(state))
		if err := r.n.SetAER(xe, fakenode.AER{Fatal: 2}); err != nil {
			t.Fatal(err)
		}
		wantHealthy(t, r.status(t, xe))
		r.stop()
		if err := r.n.SetAER(xe, fakenode.AER{Fatal: 3}); err != nil {
			t.Fatal(err)
		}
		wantUnhealthy(t, checkOne(t, restart(t, r, state, nil), r.n, xe), health.ReasonAERFatal)
	})
}

func TestAStaleStateFileIsIgnoredAndABadPathRefused(t *testing.T) {
	r := newRig(t, discreteXe)
	dir := t.TempDir()
	cases := []struct {
		name, content, says string
	}{
		{"another format", `{"version": 99, "gpus": {}}`, "malformed"},
		{"from another boot", "", "another boot"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			state := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".json")
			content := tc.content
			if content == "" {
				// A wedge recorded with the GPU's real binding, in a boot
				// that is not this one.
				src := filepath.Join(dir, "src.json")
				feed := newFeed()
				lm, err := health.New(health.WithSysfsRoot(r.n.Sys), health.WithStateFile(src),
					health.WithUeventConn(func() (uevent.Conn, error) { return feed, nil }))
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- lm.Run(ctx) }()
				feed.send(t, r.must(r.n.WedgedEvent(xe, "rebind")), nil)
				cancel()
				<-done
				var f map[string]any
				b, err := os.ReadFile(src)
				if err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal(b, &f); err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(string(b), `"wedged"`) {
					t.Fatalf("the source state holds no wedge:\n%s", b)
				}
				f["bootID"] = "00000000-0000-0000-0000-000000000000"
				b, _ = json.Marshal(f)
				content = string(b)
			}
			if err := os.WriteFile(state, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			var logs strings.Builder
			m := restart(t, r, state, &logs)
			wantHealthy(t, checkOne(t, m, r.n, xe))
			if !strings.Contains(logs.String(), tc.says) {
				t.Errorf("logs do not say %q: %s", tc.says, logs.String())
			}
		})
	}
	t.Run("a path below a file", func(t *testing.T) {
		blocker := filepath.Join(dir, "file")
		if err := os.WriteFile(blocker, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(blocker, "health.json")
		_, err := health.New(health.WithSysfsRoot(r.n.Sys), health.WithStateFile(path))
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Fatalf("New = %v, want an error naming %s: no state could ever be kept there", err, path)
		}
	})
}

// The Monitor replaces its state file by renaming over it: a path that
// holds anything it did not write is refused at start, and left as it was.
func TestAStateFilePathHoldingSomethingElseIsRefusedAndLeftAlone(t *testing.T) {
	r := newRig(t, discreteXe)
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, says string
		make       func(path string) error
	}{
		{"a file that is not a state file", "holds something else", func(p string) error { return os.WriteFile(p, []byte("{not json"), 0o644) }},
		{"a JSON file of someone else", "holds something else", func(p string) error { return os.WriteFile(p, []byte(`{"name": "x"}`), 0o644) }},
		{"a directory", "is a directory", func(p string) error { return os.Mkdir(p, 0o755) }},
		{"a FIFO", "is a FIFO", func(p string) error { return syscall.Mkfifo(p, 0o644) }},
		{"a symbolic link", "is a symbolic link", func(p string) error { return os.Symlink(target, p) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			if err := tc.make(path); err != nil {
				t.Fatal(err)
			}
			before, _ := os.Lstat(path)
			_, err := health.New(health.WithSysfsRoot(r.n.Sys), health.WithStateFile(path))
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("New = %v, want an error naming %s and saying %q", err, path, tc.says)
			}
			after, _ := os.Lstat(path)
			if !os.SameFile(before, after) || before.Mode() != after.Mode() || before.Size() != after.Size() {
				t.Error("the path was changed")
			}
		})
	}
	if b, _ := os.ReadFile(target); string(b) != "keep me" {
		t.Errorf("the link's target was changed: %q", b)
	}
}

// list reads the plugin's state file to show a wedge only the plugin
// heard of, and must never write it: the running plugin owns it.
func TestAStateFileOfAnotherIsReadAndNeverWritten(t *testing.T) {
	r := newRig(t, discreteXe)
	state := filepath.Join(t.TempDir(), "health.json")
	feed := newFeed()
	owner, err := health.New(health.WithSysfsRoot(r.n.Sys), health.WithStateFile(state),
		health.WithUeventConn(func() (uevent.Conn, error) { return feed, nil }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- owner.Run(ctx) }()
	feed.send(t, r.must(r.n.WedgedEvent(xe, "rebind")), nil)
	cancel()
	<-done
	before, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(state)

	reader, err := health.New(health.WithSysfsRoot(r.n.Sys), health.WithStateFileOf(state), health.WithSources(health.AllSources&^health.SourceUevent))
	if err != nil {
		t.Fatal(err)
	}
	wantUnhealthy(t, checkOne(t, reader, r.n, xe), health.ReasonWedged)
	if err := r.n.SetAER(xe, fakenode.AER{Correctable: 3}); err != nil {
		t.Fatal(err)
	}
	checkOne(t, reader, r.n, xe)
	after, _ := os.ReadFile(state)
	st2, _ := os.Stat(state)
	if string(after) != string(before) || !st.ModTime().Equal(st2.ModTime()) {
		t.Error("the reader wrote the owner's state file")
	}

	t.Run("a path holding something else is not read and is no error", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "notes")
		if err := os.WriteFile(other, []byte("notes"), 0o644); err != nil {
			t.Fatal(err)
		}
		var logs strings.Builder
		m, err := health.New(health.WithSysfsRoot(r.n.Sys), health.WithStateFileOf(other), health.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
		if err != nil {
			t.Fatal(err)
		}
		wantHealthy(t, checkOne(t, m, r.n, xe))
		if !strings.Contains(logs.String(), "not reading the health state file") {
			t.Errorf("no warning: %s", logs.String())
		}
	})
}
