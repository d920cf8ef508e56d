package app

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
)

func listCommand() *cli.Command {
	var (
		common commonConfig
		format string
	)
	return &cli.Command{
		Name:  "list",
		Usage: "list every Intel GPU of this node, ready or not",
		Flags: append(common.flags(),
			&cli.StringFlag{Name: "format", Value: "table", Usage: "table or json", EnvVars: env("list-format"), Destination: &format},
		),
		Action: func(c *cli.Context) error {
			if format != "table" && format != "json" {
				return fmt.Errorf("--format: invalid list format %q: want table or json", format)
			}
			log, err := common.logger(c.App.ErrWriter)
			if err != nil {
				return err
			}
			if err := common.checkRoots(); err != nil {
				return err
			}
			res, err := common.scanner().Scan()
			if err != nil {
				return err
			}
			for _, s := range res.Ignored {
				log.Debug("not an Intel GPU", "card", s.Name, "reason", s.Reason)
			}
			if format == "json" {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			return writeTable(c.App.Writer, res)
		},
	}
}

// writeTable prints one row per GPU and, below, the cards that could not
// be read, so a person sees at once what is handed out and what is not.
func writeTable(w io.Writer, res *discovery.Result) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPCI ADDRESS\tDEVICE ID\tDRIVER\tNUMA\tSR-IOV\tNODES\tSTATUS")
	for i := range res.Devices {
		d := &res.Devices[i]
		status := "ready"
		if !d.Usable() {
			status = "not handed out: " + d.Reason
		}
		numa := "-"
		if d.NUMANode >= 0 {
			numa = strconv.Itoa(d.NUMANode)
		}
		driver := d.Driver
		if driver == "" {
			driver = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			d.Card, d.PCIAddress, d.DeviceID, driver, numa, sriovText(d.SRIOV), nodesText(d), status)
	}
	if len(res.Devices) == 0 {
		fmt.Fprintln(tw, "(no Intel GPU found)")
	}
	if err := tw.Flush(); err != nil {
		return err
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
