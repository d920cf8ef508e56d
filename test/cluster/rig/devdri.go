package rig

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// DevNode is a char device as a container lists it.
type DevNode struct {
	Name string // "card1", "renderD129"
	Dev  string // "226:1"
}

// Listing is a container's own view of /dev/dri, parsed from busybox
// `ls -l` output printed by ListScript.
type Listing struct {
	Nodes  []DevNode         // char devices directly in /dev/dri, sorted by name
	ByPath map[string]string // /dev/dri/by-path link name -> target
	// ByPathDevs are by-path entries that are char devices themselves (a
	// bind-mounted link resolves to its node): name -> MAJOR:MINOR.
	ByPathDevs map[string]string
}

var (
	charLine = regexp.MustCompile(`^c\S*\s+\d+\s+\S+\s+\S+\s+(\d+),\s*(\d+)\s+.*\s(\S+)$`)
	linkLine = regexp.MustCompile(`^l\S*\s.*\s(\S+) -> (\S+)$`)
)

// ParseListing reads the output of ListScript.
func ParseListing(out string) Listing {
	l := Listing{ByPath: map[string]string{}, ByPathDevs: map[string]string{}}
	byPath := false
scan:
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "--- by-path":
			byPath = true
		case line == "=== end":
			break scan
		case !byPath:
			if m := charLine.FindStringSubmatch(line); m != nil {
				l.Nodes = append(l.Nodes, DevNode{Name: m[3], Dev: m[1] + ":" + m[2]})
			}
		default:
			if m := linkLine.FindStringSubmatch(line); m != nil {
				l.ByPath[m[1]] = m[2]
			} else if m := charLine.FindStringSubmatch(line); m != nil {
				l.ByPathDevs[m[3]] = m[1] + ":" + m[2]
			}
		}
	}
	sort.Slice(l.Nodes, func(i, j int) bool { return l.Nodes[i].Name < l.Nodes[j].Name })
	return l
}

// NodeGPU is one GPU of the fake node as its sysfs tree describes it.
type NodeGPU struct {
	PCI    string
	Driver string
	Nodes  []DevNode // card, then render
}

// ReadNodeGPUs reads every cardN of sysRoot/class/drm that has a PCI device
// with a driver: the ground truth the container views are checked against.
func ReadNodeGPUs(sysRoot string) ([]NodeGPU, error) {
	cards, err := filepath.Glob(filepath.Join(sysRoot, "class", "drm", "card*"))
	if err != nil {
		return nil, err
	}
	var out []NodeGPU
	for _, card := range cards {
		name := filepath.Base(card)
		if strings.Contains(name, "-") { // connectors: card0-DP-1
			continue
		}
		devLink, err := filepath.EvalSymlinks(filepath.Join(card, "device"))
		if err != nil {
			continue
		}
		drv, err := os.Readlink(filepath.Join(devLink, "driver"))
		if err != nil {
			continue
		}
		g := NodeGPU{PCI: filepath.Base(devLink), Driver: filepath.Base(drv)}
		dev, err := os.ReadFile(filepath.Join(card, "dev"))
		if err != nil {
			return nil, fmt.Errorf("reading %s/dev: %w", card, err)
		}
		g.Nodes = append(g.Nodes, DevNode{Name: name, Dev: strings.TrimSpace(string(dev))})
		renders, _ := filepath.Glob(filepath.Join(devLink, "drm", "renderD*"))
		for _, rd := range renders {
			dev, err := os.ReadFile(filepath.Join(rd, "dev"))
			if err != nil {
				return nil, fmt.Errorf("reading %s/dev: %w", rd, err)
			}
			g.Nodes = append(g.Nodes, DevNode{Name: filepath.Base(rd), Dev: strings.TrimSpace(string(dev))})
		}
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PCI < out[j].PCI })
	return out, nil
}

// MatchGPUs maps a container's listing back to the node's GPUs. It fails
// when the container sees a node that is not exactly one GPU's card or
// render node (wrong name, wrong numbers, or a partial GPU).
func MatchGPUs(l Listing, gpus []NodeGPU) ([]NodeGPU, error) {
	seen := map[DevNode]bool{}
	for _, n := range l.Nodes {
		seen[n] = true
	}
	var got []NodeGPU
	for _, g := range gpus {
		have := 0
		for _, n := range g.Nodes {
			if seen[n] {
				have++
				delete(seen, n)
			}
		}
		switch have {
		case 0:
		case len(g.Nodes):
			got = append(got, g)
		default:
			return nil, fmt.Errorf("container sees only %d of %d nodes of GPU %s", have, len(g.Nodes), g.PCI)
		}
	}
	if len(seen) > 0 {
		var extra []string
		for n := range seen {
			extra = append(extra, n.Name+" "+n.Dev)
		}
		sort.Strings(extra)
		return nil, fmt.Errorf("container sees nodes that belong to no GPU of the node: %v", extra)
	}
	return got, nil
}
