package fakenode

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Uevent returns a message as the kernel sends it on NETLINK_KOBJECT_UEVENT: the header
// "action@devpath", then ACTION, DEVPATH and SUBSYSTEM, then vars, then SEQNUM, each ended by a NUL.
func Uevent(action, devpath, subsystem string, seqnum uint64, vars ...string) []byte {
	var b strings.Builder
	for _, s := range append([]string{
		action + "@" + devpath, "ACTION=" + action, "DEVPATH=" + devpath, "SUBSYSTEM=" + subsystem,
	}, append(vars, fmt.Sprintf("SEQNUM=%d", seqnum))...) {
		b.WriteString(s)
		b.WriteByte(0)
	}
	return []byte(b.String())
}

// devPath turns a directory of the tree into the DEVPATH the kernel would name it by.
func (n *Node) devPath(dir string) string {
	return "/" + filepath.ToSlash(strings.TrimPrefix(dir, n.Sys+string(filepath.Separator)))
}

// FunctionDevPath returns the DEVPATH of the GPU's PCI function: "/devices/<Parent>/<PCI>".
func (n *Node) FunctionDevPath(pci string) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	f, err := n.function(pci)
	if err != nil {
		return "", fmt.Errorf("fakenode: function devpath: %w", err)
	}
	return n.devPath(f.dir), nil
}

// CardDevPath returns the DEVPATH of the GPU's card: "/devices/<Parent>/<PCI>/drm/cardN".
func (n *Node) CardDevPath(pci string) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cardDevPath(pci)
}

func (n *Node) cardDevPath(pci string) (string, error) {
	f, err := n.function(pci)
	if err != nil {
		return "", fmt.Errorf("fakenode: card devpath: %w", err)
	}
	if len(f.minors) == 0 {
		return "", fmt.Errorf("fakenode: card devpath of %s: an unbound function has no card", pci)
	}
	return n.devPath(filepath.Join(f.dir, "drm", f.minors[0].name)), nil
}

// nextSeqnum numbers the events this node makes, as the kernel's uevent_seqnum does.
func (n *Node) nextSeqnum() uint64 {
	n.health.seqnum++
	return n.health.seqnum
}

// cardEvent builds an event on the GPU's card with the drm class's own variables after vars.
func (n *Node) cardEvent(pci, action string, vars ...string) ([]byte, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	devpath, err := n.cardDevPath(pci)
	if err != nil {
		return nil, err
	}
	m := n.gpus[pci].minors[0]
	vars = append(vars, fmt.Sprintf("MAJOR=%d", m.num.Major), fmt.Sprintf("MINOR=%d", m.num.Minor),
		"DEVNAME=dri/"+m.name, "DEVTYPE=drm_minor")
	return Uevent(action, devpath, "drm", n.nextSeqnum(), vars...), nil
}

// WedgedEvent is what drm_dev_wedged_event sends when the GPU's driver declares it wedged: a change
// on the card with WEDGED=<methods> ("rebind,bus-reset", "vendor-specific", …) and any extra
// variables (PID=, TASK=).
func (n *Node) WedgedEvent(pci, methods string, extra ...string) ([]byte, error) {
	return n.cardEvent(pci, "change", append([]string{"WEDGED=" + methods}, extra...)...)
}

// HangEvent is i915's GPU hang event: a change on the card with ERROR=1.
func (n *Node) HangEvent(pci string) ([]byte, error) { return n.cardEvent(pci, "change", "ERROR=1") }

// CardEvent is a plain add, remove or change of the GPU's card.
func (n *Node) CardEvent(pci, action string) ([]byte, error) { return n.cardEvent(pci, action) }

// FunctionEvent is an event on the GPU's PCI function — "bind" and "unbind" (with DRIVER=),
// "add", "remove", or "change" with vars such as ERROR_EVENT=FAILED_RECOVERY.
func (n *Node) FunctionEvent(pci, action string, vars ...string) ([]byte, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	f, err := n.function(pci)
	if err != nil {
		return nil, fmt.Errorf("fakenode: function event: %w", err)
	}
	if action == "bind" || action == "unbind" {
		vars = append([]string{"DRIVER=" + f.spec.Driver}, vars...)
	}
	vars = append(vars, "PCI_SLOT_NAME="+pci)
	return Uevent(action, n.devPath(f.dir), "pci", n.nextSeqnum(), vars...), nil
}

// CoredumpEvent is the add (or remove) of a devcoredump made by AddCoredump.
func (n *Node) CoredumpEvent(name, action string) []byte {
	n.mu.Lock()
	defer n.mu.Unlock()
	return Uevent(action, "/devices/virtual/devcoredump/"+name, "devcoredump", n.nextSeqnum())
}
