package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Figure is one row of the table: a number taken from each sample.
type Figure struct {
	Name string
	// Unit is how the value prints: "MiB", "µs" or "ms".
	Unit string
	Of   func(Sample) float64
}

const mib = 1 << 20

// Figures are the rows, for calls timed calls of the named operation;
// ready says what the start figure ends with.
func Figures(calls int, call, ready string) []Figure {
	pct := func(p float64) func(Sample) float64 {
		return func(s Sample) float64 {
			if len(s.Latencies) == 0 {
				return 0
			}
			return float64(s.Latencies[int(p*float64(len(s.Latencies)-1))]) / float64(time.Microsecond)
		}
	}
	return []Figure{
		{"RSS after start (VmRSS)", "MiB", func(s Sample) float64 { return float64(s.AfterStart.RSS) / mib }},
		{"  anonymous (smaps_rollup)", "MiB", func(s Sample) float64 { return float64(s.AfterStart.Anon) / mib }},
		{"  file-backed (Rss - Anonymous)", "MiB", func(s Sample) float64 { return float64(s.AfterStart.File) / mib }},
		{"  peak during start (VmHWM)", "MiB", func(s Sample) float64 { return float64(s.AfterStart.Peak) / mib }},
		{fmt.Sprintf("RSS after %d %s calls", calls, call), "MiB", func(s Sample) float64 { return float64(s.AfterCalls.RSS) / mib }},
		{"  anonymous (smaps_rollup)", "MiB", func(s Sample) float64 { return float64(s.AfterCalls.Anon) / mib }},
		{"  peak so far (VmHWM)", "MiB", func(s Sample) float64 { return float64(s.AfterCalls.Peak) / mib }},
		{call + " p50", "µs", pct(0.50)},
		{call + " p99", "µs", pct(0.99)},
		{"start -> " + ready, "ms", func(s Sample) float64 { return float64(s.Start) / float64(time.Millisecond) }},
		{"  minor page faults by then", "faults", func(s Sample) float64 { return float64(s.StartFaults) }},
	}
}

// Median is the median of a figure over samples.
func Median(f Figure, samples []Sample) float64 {
	v := make([]float64, len(samples))
	for i, s := range samples {
		v[i] = f.Of(s)
	}
	slices.Sort(v)
	if len(v) == 0 {
		return 0
	}
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// WriteTable prints the medians of every figure for the floor and each
// other candidate, with each one's ratio and difference to the floor.
func WriteTable(w io.Writer, figs []Figure, floor string, others []string, samples map[string][]Sample) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := []string{"figure (median)", floor}
	for _, o := range others {
		head = append(head, o, "ratio", "difference")
	}
	fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
	for _, f := range figs {
		base := Median(f, samples[floor])
		row := []string{f.Name, format(base, f.Unit)}
		for _, o := range others {
			v := Median(f, samples[o])
			ratio := "-"
			if base != 0 {
				ratio = fmt.Sprintf("%.2fx", v/base)
			}
			row = append(row, format(v, f.Unit), ratio, signed(v-base, f.Unit))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	return tw.Flush()
}

func format(v float64, unit string) string {
	switch unit {
	case "MiB":
		return fmt.Sprintf("%.1f MiB", v)
	case "µs":
		return fmt.Sprintf("%.0f µs", v)
	case "faults":
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.1f %s", v, unit)
	}
}

func signed(v float64, unit string) string {
	s := format(v, unit)
	if v >= 0 {
		return "+" + s
	}
	return s
}
