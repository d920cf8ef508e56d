package app

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/spec"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health"
)

// list's output formats, for --format's check and completion.
var listFormats = []string{"table", "json"}

func listCommand() *cli.Command {
	var (
		common    commonConfig
		specCfg   specConfig
		format    string
		stateFile string
	)
	return &cli.Command{
		Name:  "list",
		Usage: "list every Intel GPU of this node, ready or not, with the CDI names to ask for",
		Flags: append(append(common.flags(), specCfg.kindFlags()...),
			&cli.StringFlag{Name: "format", Value: "table", Usage: "table or json", EnvVars: env("list-format"), Destination: &format},
			&cli.StringFlag{Name: "health-state-file", Value: defaultHealthStateFile, Usage: "the running plugin's health state file, read (never written) to show wedges only the plugin heard of; empty reads none", EnvVars: env("health-state-file"), Destination: &stateFile},
		),
		Action: func(c *cli.Context) error {
			if !slices.Contains(listFormats, format) {
				return fmt.Errorf("--format: invalid list format %q: want %s", format, strings.Join(listFormats, " or "))
			}
			log, err := common.logger(c.App.ErrWriter)
			if err != nil {
				return err
			}
			b, err := spec.NewBuilder(spec.WithVendor(specCfg.Vendor), spec.WithClass(specCfg.Class))
			if err != nil {
				return fmt.Errorf("--vendor/--class: %w", err)
			}
			scanner, err := common.nodeScanner()
			if err != nil {
				return err
			}
			res, err := scanner.Scan()
			if err != nil {
				return err
			}
			for _, s := range res.Ignored {
				log.Debug("not an Intel GPU", "card", s.Name, "reason", s.Reason)
			}
			healths, err := readHealth(res, scanner.SysfsRoot(), stateFile, log)
			if err != nil {
				return err
			}
			if format == "json" {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(newListOutput(res, b, healths))
			}
			// tabwriter writes cell by cell: one write for the table,
			// not two system calls per cell.
			out := bufio.NewWriter(c.App.Writer)
			if err := writeTable(out, res, b, healths); err != nil {
				return err
			}
			return out.Flush()
		},
	}
}

// defaultHealthStateFile is where the DaemonSet's plugin keeps its health
// state: in the kubelet's device-plugin directory.
const defaultHealthStateFile = "/var/lib/kubelet/device-plugins/intel-gpu-cdi-health.json"

// readHealth says what the kernel's signals in sysfs (and, when there is
// one, the running plugin's state file) tell of each GPU that is handed
// out; nil for the others. list hears no uevents: a wedge the plugin did
// not record shows only in the plugin's list.
func readHealth(res *discovery.Result, sysfsRoot, stateFile string, log *slog.Logger) ([]*health.Status, error) {
	opts := []health.Option{health.WithSysfsRoot(sysfsRoot), health.WithLogger(log), health.WithSources(health.AllSources &^ health.SourceUevent)}
	if stateFile != "" {
		opts = append(opts, health.WithStateFileOf(stateFile))
	}
	m, err := health.New(opts...)
	if err != nil {
		return nil, err
	}
	statuses := m.Check(res.Devices)
	out := make([]*health.Status, len(res.Devices))
	for i := range res.Devices {
		if res.Devices[i].Usable() {
			out[i] = &statuses[i]
		}
	}
	return out, nil
}

// healthText is the HEALTH column: the reason, or - for a GPU not handed out.
func healthText(s *health.Status) string {
	switch {
	case s == nil:
		return "-"
	case s.Healthy:
		return "healthy"
	case len(s.WedgedMethods) > 0:
		return fmt.Sprintf("%s (%s)", s.Reason, strings.Join(s.WedgedMethods, ","))
	}
	return string(s.Reason)
}

// cdiNames returns the fully qualified names a GPU is handed out by, the
// values of podman's --device; none when it is not handed out.
func cdiNames(d *discovery.Device, b *spec.Builder) []string {
	names := []string{}
	if !d.Usable() {
		return names
	}
	for _, n := range spec.Names(d) {
		names = append(names, b.QualifiedName(n))
	}
	return names
}

// writeTable prints one row per GPU and, below, the cards that could not
// be read, so a person sees at once what is handed out, under which names,
// and what is not.
func writeTable(w io.Writer, res *discovery.Result, b *spec.Builder, healths []*health.Status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPCI ADDRESS\tDEVICE ID\tDRIVER\tNUMA\tSR-IOV\tNODES\tCDI NAMES\tHEALTH\tSTATUS")
	ready := 0
	for i := range res.Devices {
		d := &res.Devices[i]
		status := "ready"
		if !d.Usable() {
			status = "not handed out: " + d.Reason
		} else {
			ready++
		}
		numa := "-"
		if d.NUMANode >= 0 {
			numa = strconv.Itoa(d.NUMANode)
		}
		driver := d.Driver
		if driver == "" {
			driver = "-"
		}
		names := strings.Join(cdiNames(d, b), " ")
		if names == "" {
			names = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			d.Card, d.PCIAddress, d.DeviceID, driver, numa, sriovText(d.SRIOV), nodesText(d), names, healthText(healths[i]), status)
	}
	if len(res.Devices) == 0 {
		fmt.Fprintln(tw, "(no Intel GPU found)")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if ready > 0 {
		if _, err := fmt.Fprintf(w, "%s: every ready GPU above\n", b.QualifiedName(spec.AllDevice)); err != nil {
			return err
		}
	}
	for i, s := range healths {
		if s == nil || s.Healthy {
			continue
		}
		if _, err := fmt.Fprintf(w, "%s is unhealthy: %s\n", res.Devices[i].Card, s.Message); err != nil {
			return err
		}
	}
	for _, s := range res.Skipped {
		if _, err := fmt.Fprintf(w, "skipped %s\n", s); err != nil {
			return err
		}
	}
	return nil
}

func sriovText(s discovery.SRIOV) string {
	switch s.Role {
	case discovery.RoleVF:
		return "VF of " + s.PF
	case discovery.RolePF:
		return fmt.Sprintf("PF (%d/%d VFs)", s.NumVFs, s.TotalVFs)
	}
	if s.TotalVFs > 0 {
		return fmt.Sprintf("capable (0/%d VFs)", s.TotalVFs)
	}
	return "-"
}

func nodesText(d *discovery.Device) string {
	var parts []string
	for _, n := range d.Nodes() {
		parts = append(parts, fmt.Sprintf("%s %d:%d", strings.TrimPrefix(n.Path, "/dev/dri/"), n.Major, n.Minor))
	}
	return strings.Join(parts, ", ")
}
