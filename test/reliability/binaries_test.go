package reliability_test

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"syscall"
	"testing"
)

// BenchmarkBinaries measures what linking the DRA driver costs every
// subcommand of a binary: each variant is built as the image builds it,
// then `version` (a subcommand that does nothing, so what it costs is the
// binary's own: its package init) runs initRuns times with
// GODEBUG=inittrace=1. Reported per variant, minimum over the runs: the
// size, the init time and bytes summed over every package, and the peak
// RSS of the process.
//
//	go test -run '^$' -bench '^BenchmarkBinaries$' -v -count=1 ./test/reliability/
func BenchmarkBinaries(b *testing.B) {
	variants := []struct{ name, cmd, tags string }{
		{"intel-gpu-cdi", "intel-gpu-cdi", ""},
		{"intel-gpu-cdi+dra", "intel-gpu-cdi", "dra_combined"},
		{"intel-gpu-cdi-dra", "intel-gpu-cdi-dra", ""},
	}
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			bin := buildCmd(b, v.cmd, v.tags)
			fi, err := os.Stat(bin)
			if err != nil {
				b.Fatal(err)
			}
			var ms, bytes, rss []float64
			for range initRuns {
				m, by, r := initCost(b, bin)
				ms, bytes, rss = append(ms, m), append(bytes, by), append(rss, r)
			}
			b.Logf("%s: %.1f MiB, init %.2f ms and %.0f kB over %d runs (min), peak RSS of `version` %.1f MiB",
				v.name, float64(fi.Size())/(1<<20), slices.Min(ms), slices.Min(bytes)/1024, initRuns, slices.Min(rss)/(1<<20))
			b.ReportMetric(float64(fi.Size())/(1<<20), "size-MiB")
			b.ReportMetric(slices.Min(ms), "init-ms")
			b.ReportMetric(slices.Min(bytes)/1024, "init-kB")
			b.ReportMetric(slices.Min(rss)/(1<<20), "version-RSS-MiB")
		})
	}
}

const initRuns = 5

// initLine is one line of GODEBUG=inittrace=1:
// "init internal/bytealg @0.008 ms, 0 ms clock, 0 bytes, 0 allocs".
var initLine = regexp.MustCompile(`^init \S+ @[0-9.]+ ms, ([0-9.]+) ms clock, ([0-9]+) bytes, [0-9]+ allocs`)

// initCost runs `bin version` and returns the package init time (ms) and
// bytes it reports, and the process's peak RSS (bytes).
func initCost(t testing.TB, bin string) (ms, bytes_, rss float64) {
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
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = float64(ru.Maxrss) * 1024
	}
	return ms, bytes_, rss
}
