package rig

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// kubeletChains are the iptables chains a kubelet creates at start (the
// canaries it watches for a flushed table, the hint for kube-proxy, and the
// firewall that drops martian traffic to 127.0.0.0/8), for IPv4 and IPv6.
var kubeletChains = []struct{ table, chain string }{
	{"mangle", "KUBE-IPTABLES-HINT"},
	{"mangle", "KUBE-KUBELET-CANARY"},
	{"nat", "KUBE-KUBELET-CANARY"},
	{"filter", "KUBE-KUBELET-CANARY"},
	{"filter", "KUBE-FIREWALL"},
}

// kubeletJumps are the rules the kubelet adds to built-in chains.
var kubeletJumps = []struct{ table, chain, target string }{
	{"filter", "INPUT", "KUBE-FIREWALL"},
	{"filter", "OUTPUT", "KUBE-FIREWALL"},
}

type iptChain struct{ bin, table, chain string }

// iptablesState records which kubelet chains and which nftables tables
// existed before the run.
type iptablesState struct {
	chains map[iptChain]bool
	tables map[string]bool // "ip mangle", "ip6 nat", ...; nil without nft
}

func iptablesBins() []string {
	var out []string
	for _, b := range []string{"iptables", "ip6tables"} {
		if _, err := exec.LookPath(b); err == nil {
			out = append(out, b)
		}
	}
	return out
}

func snapshotIptables() iptablesState {
	s := iptablesState{chains: map[iptChain]bool{}}
	for _, bin := range iptablesBins() {
		for _, c := range kubeletChains {
			if exec.Command(bin, "-w", "-t", c.table, "-S", c.chain).Run() == nil {
				s.chains[iptChain{bin, c.table, c.chain}] = true
			}
		}
	}
	s.tables = nftTables()
	return s
}

// nftTables lists "family name" of every nftables table, or nil without nft.
func nftTables() map[string]bool {
	out, err := exec.Command("nft", "list", "tables").Output()
	if err != nil {
		return nil
	}
	tables := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "table "); ok {
			tables[rest] = true
		}
	}
	return tables
}

// restore removes the kubelet's chains (and its jumps to them) that were not
// there before, then the nftables tables that only held them.
func (s iptablesState) restore() error {
	var errs []error
	for _, bin := range iptablesBins() {
		for _, j := range kubeletJumps {
			if s.chains[iptChain{bin, j.table, j.target}] {
				continue
			}
			// The kubelet may have added the jump more than once.
			for exec.Command(bin, "-w", "-t", j.table, "-D", j.chain, "-j", j.target).Run() == nil {
			}
		}
		for _, c := range kubeletChains {
			if s.chains[iptChain{bin, c.table, c.chain}] {
				continue
			}
			if exec.Command(bin, "-w", "-t", c.table, "-S", c.chain).Run() != nil {
				continue
			}
			for _, op := range []string{"-F", "-X"} {
				if out, err := exec.Command(bin, "-w", "-t", c.table, op, c.chain).CombinedOutput(); err != nil {
					errs = append(errs, fmt.Errorf("%s -t %s %s %s: %w: %s", bin, c.table, op, c.chain, err, strings.TrimSpace(string(out))))
				}
			}
		}
	}
	if s.tables == nil {
		return errors.Join(errs...)
	}
	for table := range nftTables() {
		if s.tables[table] || !nftTableEmpty(table) {
			continue
		}
		if out, err := exec.Command("nft", "delete", "table", table).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("nft delete table %s: %w: %s", table, err, strings.TrimSpace(string(out))))
		}
	}
	return errors.Join(errs...)
}

// nftTableEmpty: a table holding no rule and only empty built-in chains
// (which iptables-nft creates on first use) is one the kubelet made.
func nftTableEmpty(table string) bool {
	out, err := exec.Command("nft", "list", "table", table).Output()
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(out), "\n") {
		l := strings.TrimSpace(line)
		switch {
		case l == "", l == "}", strings.HasPrefix(l, "table "), strings.HasPrefix(l, "chain "),
			strings.HasPrefix(l, "type "), strings.HasPrefix(l, "#"):
		default:
			return false // a rule, set or map
		}
	}
	return true
}

// changes lists kubelet chains present now that were absent before.
func (s iptablesState) changes() []string {
	var out []string
	for _, bin := range iptablesBins() {
		for _, c := range kubeletChains {
			if !s.chains[iptChain{bin, c.table, c.chain}] && exec.Command(bin, "-w", "-t", c.table, "-S", c.chain).Run() == nil {
				out = append(out, fmt.Sprintf("%s chain %s/%s exists, did not before", bin, c.table, c.chain))
			}
		}
	}
	return out
}
