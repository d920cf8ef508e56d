package spec_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/spec"
)

// chunks records every Write it gets.
type chunks struct {
	bytes.Buffer
	sizes []int
}

func (c *chunks) Write(p []byte) (int, error) {
	c.sizes = append(c.sizes, len(p))
	return c.Buffer.Write(p)
}

func TestEncodeWritesWhatMarshalReturnsAFewKiBAtATime(t *testing.T) {
	for _, count := range []int{1, 64, 512} {
		s, err := newBuilder(t).Build(nodeDevices(count))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []spec.Format{spec.FormatJSON, spec.FormatYAML} {
			t.Run(fmt.Sprintf("%d GPUs in %s", count, f), func(t *testing.T) {
				want, err := spec.Marshal(s, f)
				if err != nil {
					t.Fatal(err)
				}
				var got chunks
				if err := spec.Encode(&got, s, f); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got.Bytes(), want) {
					t.Fatalf("Encode wrote %d bytes that differ from Marshal's %d", got.Len(), len(want))
				}
				// A device is a few hundred bytes: no write holds much more
				// than the 4 KiB at which the encoder spills.
				for _, n := range got.sizes {
					if n > 8<<10 {
						t.Errorf("a write of %d bytes: the encoder held more than a few devices", n)
					}
				}
				if count >= 64 && len(got.sizes) < len(want)/(8<<10) {
					t.Errorf("%d writes for %d bytes: the spec was not written as it was encoded", len(got.sizes), len(want))
				}
			})
		}
	}
}

func TestEncodeRefusesWhatMarshalRefusesAndWritesNothing(t *testing.T) {
	s := igpuSpec(t)
	s.Devices[0].Name = "card 0" // a name the CDI library refuses
	_, want := spec.Marshal(s, spec.FormatJSON)
	if want == nil {
		t.Fatal("Marshal took a device name with a space")
	}
	var got chunks
	err := spec.Encode(&got, s, spec.FormatJSON)
	if err == nil || err.Error() != want.Error() {
		t.Errorf("Encode = %v, want Marshal's %v", err, want)
	}
	if got.Len() != 0 {
		t.Errorf("Encode wrote %d bytes of a spec it refused", got.Len())
	}
}

type failingWriter struct{ after int }

var errDiskFull = errors.New("disk full")

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.after <= 0 {
		return 0, errDiskFull
	}
	w.after--
	return len(p), nil
}

func TestEncodeReturnsTheWritersError(t *testing.T) {
	s, err := newBuilder(t).Build(nodeDevices(64))
	if err != nil {
		t.Fatal(err)
	}
	if err := spec.Encode(&failingWriter{after: 2}, s, spec.FormatYAML); !errors.Is(err, errDiskFull) {
		t.Errorf("Encode = %v, want the writer's error", err)
	}
}

func TestWriteEncodedFromLeavesTheOldSpecWhenEncodingFails(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "intel.com-gpu.json")
	old := igpuSpec(t)
	if err := spec.Write(path, old, spec.FormatJSON); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	s, err := newBuilder(t).Build(nodeDevices(64))
	if err != nil {
		t.Fatal(err)
	}
	err = spec.WriteEncodedFrom(path, func(w io.Writer) error {
		if err := spec.Encode(w, s, spec.FormatJSON); err != nil {
			return err
		}
		return errDiskFull
	})
	if !errors.Is(err, errDiskFull) {
		t.Errorf("WriteEncodedFrom = %v, want the encoder's error", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Error("the spec changed although its new encoding failed")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("%d files in the spec directory, want the spec alone: a temporary file was left", len(entries))
	}

	err = spec.WriteEncodedFrom(path, func(w io.Writer) error { return spec.Encode(w, s, spec.FormatJSON) })
	if err != nil {
		t.Fatal(err)
	}
	want, _ := spec.Marshal(s, spec.FormatJSON)
	if got, _ := os.ReadFile(path); !bytes.Equal(got, want) {
		t.Error("the spec written as it was encoded is not Marshal's")
	}
}

// BenchmarkEncodeToDigest is what the plugin does with every spec it
// builds: encode it into a SHA-256 to compare with the last one written.
// Against BenchmarkMarshal, B/op shows what streaming saves.
func BenchmarkEncodeToDigest(b *testing.B) {
	for _, count := range benchSizes {
		s, err := newBuilder(b).Build(nodeDevices(count))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("gpus=%d", count), func(b *testing.B) {
			h := sha256.New()
			loop(b, func() {
				h.Reset()
				if err := spec.Encode(h, s, spec.FormatJSON); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}
