package reliability_test

import (
	"bufio"
	"bytes"
	"math"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
)

// BenchmarkBinaries measures what linking the DRA driver costs every
// subcommand of a binary: each variant is built as the image builds it
// (once, outside the timer), then each op is one run of `version` (a
// subcommand that does nothing, so what it costs is the binary's own: the
// runtime and package init) with GODEBUG=inittrace=1. Reported per
// variant: the size, and the init time and bytes summed over every
// package, the minimum over the runs.
//
//	go test -run '^$' -bench '^BenchmarkBinaries$' -benchtime 20x -v -count=1 ./test/reliability/
func BenchmarkBinaries(b *testing.B) {
	variants := []struct{ name, cmd, tags string }{
		{"intel-gpu-cdi", "intel-gpu-cdi", ""},
		{"intel-gpu-cdi+dra", "intel-gpu-cdi", "dra_combined"},
		{"intel-gpu-cdi-dra", "intel-gpu-cdi-dra", ""},
	}
	// Built for the parent: the framework runs each sub-benchmark more
	// than once, and a sub-benchmark's files go when a run ends.
	bins := make([]string, len(variants))
	for i, v := range variants {
		bins[i] = buildCmd(b, v.cmd, v.tags)
	}
	for i, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			bin := bins[i]
			fi, err := os.Stat(bin)
			if err != nil {
				b.Fatal(err)
			}
			ms, kb := math.Inf(1), math.Inf(1)
			b.ResetTimer()
			for range b.N {
				m, by := initCost(b, bin)
				ms, kb = min(ms, m), min(kb, by/1024)
			}
			b.StopTimer()
			b.ReportMetric(float64(fi.Size())/(1<<20), "size-MiB")
			b.ReportMetric(ms, "init-ms")
			b.ReportMetric(kb, "init-kB")
		})
	}
}

// initLine is one line of GODEBUG=inittrace=1:
// "init internal/bytealg @0.008 ms, 0 ms clock, 0 bytes, 0 allocs".
var initLine = regexp.MustCompile(`^init \S+ @[0-9.]+ ms, ([0-9.]+) ms clock, ([0-9]+) bytes, [0-9]+ allocs`)

// initCost runs `bin version` and returns the package init time (ms) and
// bytes it reports.
func initCost(t testing.TB, bin string) (ms, bytes_ float64) {
	t.Helper()
	cmd := exec.Command(bin, "version")
	cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s version: %v\n%s", bin, err, stderr.String())
	}
	sc := bufio.NewScanner(&stderr)
	lines := 0
	for sc.Scan() {
		m := initLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		lines++
		d, _ := strconv.ParseFloat(m[1], 64)
		n, _ := strconv.ParseFloat(m[2], 64)
		ms += d
		bytes_ += n
	}
	if lines == 0 {
		t.Fatalf("%s printed no inittrace lines", bin)
	}
	return ms, bytes_
}
