package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Mem is a process's memory as the kernel accounts it, in bytes.
type Mem struct {
	// RSS is VmRSS of /proc/<pid>/status: every resident page.
	RSS int64
	// Peak is VmHWM: the highest RSS so far.
	Peak int64
	// Anon is Anonymous of /proc/<pid>/smaps_rollup: the process's own
	// memory (Go heap, stacks, runtime metadata).
	Anon int64
	// File is smaps_rollup's Rss minus Anonymous: pages of the binary and
	// other mapped files, shared with the page cache.
	File int64
}

// ReadMem reads the memory figures of a process.
func ReadMem(pid int) (Mem, error) {
	var m Mem
	status, err := readKB(fmt.Sprintf("/proc/%d/status", pid), "VmRSS", "VmHWM")
	if err != nil {
		return m, err
	}
	rollup, err := readKB(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Rss", "Anonymous")
	if err != nil {
		return m, err
	}
	m.RSS, m.Peak = status["VmRSS"], status["VmHWM"]
	m.Anon, m.File = rollup["Anonymous"], rollup["Rss"]-rollup["Anonymous"]
	return m, nil
}

// ReadFaults reads the minor page faults a process has taken so far
// (minflt, the tenth field of /proc/<pid>/stat). Each is a page the
// kernel mapped for it: on a virtual machine whose page faults go through
// the hypervisor they are a large part of a start (BENCHMARKS.md, "At the
// floor, part 5").
func ReadFaults(pid int) (int64, error) {
	path := fmt.Sprintf("/proc/%d/stat", pid)
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// The command name, second field, is in parentheses and may hold
	// spaces and parentheses itself: count fields after the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("%s: no command name in %q", path, data)
	}
	fields := strings.Fields(string(data[i+1:]))
	const minflt = 10 - 3 // field 10, counting from the state, field 3
	if len(fields) <= minflt {
		return 0, fmt.Errorf("%s: %d fields after the command name, want more than %d", path, len(fields), minflt)
	}
	n, err := strconv.ParseInt(fields[minflt], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: minflt: %w", path, err)
	}
	return n, nil
}

// readKB reads "Key:   123 kB" lines of a proc file and returns the keys
// asked for in bytes; a key that is missing is an error.
func readKB(path string, keys ...string) (map[string]int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) != 2 || fields[1] != "kB" {
			continue
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", path, k, err)
		}
		out[k] = n << 10
	}
	for _, k := range keys {
		if _, ok := out[k]; !ok {
			return nil, fmt.Errorf("%s has no %s line", path, k)
		}
	}
	return out, nil
}
