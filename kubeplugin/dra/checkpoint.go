package dra

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"slices"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/atomicfile"
)

// checkpointVersion is the version of the checkpoint's format. A file of
// another version is set aside, not read (see loadCheckpoint).
const checkpointVersion = 1

// checkpointTempPrefix starts the temporary files of a checkpoint write,
// so that those a killed writer left can be removed.
const checkpointTempPrefix = ".checkpoint-"

// checkpointMode keeps the checkpoint to this process: it names the claims
// and namespaces of every tenant on the node, and nothing else reads it
// (the CDI spec, which runtimes read, is 0644).
const checkpointMode = 0o600

// preparedDevice is one device a claim was prepared with.
type preparedDevice struct {
	Request    string     `json:"request"`
	Pool       string     `json:"pool"`
	Device     string     `json:"device"`
	PCIAddress string     `json:"pciAddress,omitempty"`
	PF         string     `json:"pf,omitempty"`
	CDIDevices []string   `json:"cdiDevices,omitempty"`
	ShareID    *types.UID `json:"shareID,omitempty"`
	Shares     int64      `json:"shares,omitempty"`
	Admin      bool       `json:"adminAccess,omitempty"`
}

// preparedClaim is a claim prepared on this node: what Unprepare and the
// reconciliation need once the claim itself is gone, and what keeps a GPU
// from being prepared for two claims.
type preparedClaim struct {
	Namespace string           `json:"namespace"`
	Name      string           `json:"name"`
	Devices   []preparedDevice `json:"devices"`
}

func (p *preparedClaim) equal(o *preparedClaim) bool {
	return p.Namespace == o.Namespace && p.Name == o.Name &&
		slices.EqualFunc(p.Devices, o.Devices, func(a, b preparedDevice) bool {
			return a.Request == b.Request && a.Pool == b.Pool && a.Device == b.Device &&
				a.PCIAddress == b.PCIAddress && a.PF == b.PF && slices.Equal(a.CDIDevices, b.CDIDevices) &&
				equalUID(a.ShareID, b.ShareID) && a.Shares == b.Shares && a.Admin == b.Admin
		})
}

func equalUID(a, b *types.UID) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// result is the kubelet's answer for the claim.
func (p *preparedClaim) result() kubeletplugin.PrepareResult {
	devs := make([]kubeletplugin.Device, 0, len(p.Devices))
	for _, d := range p.Devices {
		devs = append(devs, kubeletplugin.Device{
			Requests:     []string{d.Request},
			PoolName:     d.Pool,
			DeviceName:   d.Device,
			CDIDeviceIDs: d.CDIDevices,
			ShareID:      d.ShareID,
		})
	}
	return kubeletplugin.PrepareResult{Devices: devs}
}

// claims are the prepared claims by UID. A value is never modified once
// stored: a change makes a new map (clone, then edit).
type claims map[types.UID]*preparedClaim

func (c claims) clone() claims { return maps.Clone(c) }

// checkpointFile is the checkpoint as stored.
type checkpointFile struct {
	Version int    `json:"version"`
	Driver  string `json:"driver"`
	Node    string `json:"node"`
	Claims  claims `json:"claims"`
}

// checkpoint keeps the prepared claims on disk, so that they survive a
// crash or SIGKILL of the plugin: written whole to a temporary file,
// fsynced, renamed over the old one, and the directory fsynced.
type checkpoint struct {
	path, driver, node string
}

// load reads the checkpoint. A missing file is no claim. A file that is not
// a checkpoint of this version, driver and node is renamed to
// <path>.unreadable and no claim is read from it; note says so. That loses
// nothing the node needs: preparing a claim changes nothing on the node
// (its CDI names come from the node's one spec), so there is nothing to
// undo, and Prepare answers from the claim itself. What is lost is the
// guard against preparing a GPU for a second claim while the first, which
// the scheduler gave it, still runs; the scheduler keeps that guard too.
func (c *checkpoint) load() (claims, string, error) {
	data, err := os.ReadFile(c.path)
	if errors.Is(err, fs.ErrNotExist) {
		return claims{}, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("reading checkpoint %s: %w", c.path, err)
	}
	var f checkpointFile
	why := ""
	switch err := json.Unmarshal(data, &f); {
	case err != nil:
		why = fmt.Sprintf("not a checkpoint: %v", err)
	case f.Version != checkpointVersion:
		why = fmt.Sprintf("version %d, this plugin reads %d", f.Version, checkpointVersion)
	case f.Driver != c.driver || f.Node != c.node:
		why = fmt.Sprintf("written by driver %q on node %q, this is driver %q on node %q", f.Driver, f.Node, c.driver, c.node)
	}
	if why == "" {
		if f.Claims == nil {
			f.Claims = claims{}
		}
		return f.Claims, "", nil
	}
	aside := c.path + ".unreadable"
	if err := os.Rename(c.path, aside); err != nil {
		return nil, "", fmt.Errorf("checkpoint %s is unreadable (%s) and cannot be set aside: %w", c.path, why, err)
	}
	return claims{}, fmt.Sprintf("checkpoint %s was unreadable (%s); moved to %s, starting with no prepared claim", c.path, why, aside), nil
}

// save replaces the checkpoint with cs. On error the file on disk is as it
// was.
func (c *checkpoint) save(cs claims) error {
	data, err := json.Marshal(checkpointFile{Version: checkpointVersion, Driver: c.driver, Node: c.node, Claims: cs})
	if err != nil {
		return fmt.Errorf("encoding checkpoint: %w", err)
	}
	return atomicfile.Write(c.path, checkpointTempPrefix+"*", data, checkpointMode)
}
