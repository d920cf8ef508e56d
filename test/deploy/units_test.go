package deploy_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cmd/intel-gpu-cdi/app"
)

const (
	refreshUnit = "intel-gpu-cdi-refresh.service"
	udevRules   = "60-intel-gpu-cdi.rules"
	binaryPath  = "/usr/local/bin/intel-gpu-cdi"
)

// unitFile is a systemd unit as section -> key -> values (a key may repeat).
type unitFile map[string]map[string][]string

func readUnit(t *testing.T, file string) unitFile {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	u := unitFile{}
	section := ""
	for n, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not a key=value in a section: %q", file, n+1, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

func TestSystemdUnitsVerify(t *testing.T) {
	analyze := lookTool(t, "systemd-analyze", "apt-get install systemd")
	units, err := filepath.Glob(deployments("systemd", "*"))
	if err != nil || len(units) == 0 {
		t.Fatalf("no units in deployments/systemd: %v", err)
	}
	// verify refuses a unit whose programs do not exist on this machine:
	// point every absolute program at a stub, the rest is checked as shipped.
	dir := t.TempDir()
	stub := filepath.Join(dir, "stub")
	if err := os.WriteFile(stub, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	program := regexp.MustCompile(`(?m)^(Exec[A-Za-z]*=[-@:+!]*)/\S+`)
	var copies []string
	for _, u := range units {
		data, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		c := filepath.Join(dir, filepath.Base(u))
		if err := os.WriteFile(c, program.ReplaceAll(data, []byte("${1}"+stub)), 0o644); err != nil {
			t.Fatal(err)
		}
		copies = append(copies, c)
	}
	out, err := exec.Command(analyze, append([]string{"verify", "--man=no"}, copies...)...).CombinedOutput()
	// verify only warns (exit 0) about unknown keys and bad values: any output is a finding.
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestRefreshServiceRunsGenerateOnce(t *testing.T) {
	u := readUnit(t, deployments("systemd", refreshUnit))
	svc := u["Service"]
	if got := svc["Type"]; !slices.Equal(got, []string{"oneshot"}) {
		t.Errorf("Type = %v, want oneshot", got)
	}
	if got := u["Install"]["WantedBy"]; !slices.Contains(got, "multi-user.target") {
		t.Errorf("WantedBy = %v: /var/run/cdi is tmpfs, the spec must be written at every boot", got)
	}
	if len(svc["ExecStart"]) != 1 {
		t.Fatalf("want one ExecStart, got %v", svc["ExecStart"])
	}
	argv := strings.Fields(svc["ExecStart"][0])
	if argv[0] != binaryPath || len(argv) < 2 || argv[1] != "generate" {
		t.Fatalf("ExecStart = %v, want %s generate ...", argv, binaryPath)
	}
	i := slices.Index(argv, "--output")
	if i < 0 || i+1 >= len(argv) {
		t.Fatalf("ExecStart %v has no --output", argv)
	}
	// The plugin writes the same file on Kubernetes nodes: one owner, one name.
	if argv[i+1] != "/var/run/cdi/intel.com-gpu.json" {
		t.Errorf("--output %s, want /var/run/cdi/intel.com-gpu.json", argv[i+1])
	}

	t.Run("the CLI accepts the command line", func(t *testing.T) {
		// The same arguments, on a node without GPUs and into a temp dir:
		// generate succeeds and writes nothing when there is no GPU. (An
		// empty directory is no node: generate refuses it as --sysfs-root.)
		tmp := t.TempDir()
		for _, d := range []string{"sys/class/drm", "sys/devices", "dev"} {
			if err := os.MkdirAll(filepath.Join(tmp, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		args := slices.Clone(argv)
		args[0] = "intel-gpu-cdi"
		args[i+1] = filepath.Join(tmp, "intel.com-gpu.json")
		args = append(args, "--sysfs-root", filepath.Join(tmp, "sys"), "--dev-root", filepath.Join(tmp, "dev"))
		a := app.New()
		var stdout, stderr bytes.Buffer
		a.Writer, a.ErrWriter = &stdout, &stderr
		if err := a.Run(args); err != nil {
			t.Errorf("intel-gpu-cdi %v: %v\n%s", args[1:], err, stderr.String())
		}
	})
}

// udevRule is one parsed rule line: its key/operator/value triples.
type udevRule struct {
	Line  int
	Pairs []udevPair
}

type udevPair struct{ Key, Attr, Op, Value string }

var (
	udevPairRE = regexp.MustCompile(`^\s*([A-Z_]+)(?:\{([^}]*)\})?\s*(==|!=|\+=|-=|:=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)`)
	// What udev(7) documents, with whether the key takes {attr}: "must",
	// "may" or "" (never), and which operators it takes.
	udevMatchKeys = map[string]string{
		"ACTION": "", "DEVPATH": "", "KERNEL": "", "KERNELS": "", "NAME": "", "SYMLINK": "",
		"SUBSYSTEM": "", "SUBSYSTEMS": "", "DRIVER": "", "DRIVERS": "", "TAG": "", "TAGS": "",
		"ATTR": "must", "ATTRS": "must", "SYSCTL": "must", "ENV": "must", "CONST": "must",
		"TEST": "may", "PROGRAM": "", "RESULT": "",
	}
	udevAssignKeys = map[string]string{
		"NAME": "", "SYMLINK": "", "OWNER": "", "GROUP": "", "MODE": "", "TAG": "",
		"ATTR": "must", "SYSCTL": "must", "ENV": "must", "SECLABEL": "must",
		"RUN": "may", "IMPORT": "must", "OPTIONS": "", "LABEL": "", "GOTO": "",
	}
)

// parseUdevRules parses a rules file as udev does: one rule per line, "\"
// continues a line, "#" starts a comment.
func parseUdevRules(t *testing.T, data []byte) []udevRule {
	t.Helper()
	var rules []udevRule
	var pending strings.Builder
	start := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if pending.Len() == 0 {
			start = n
			if s := strings.TrimSpace(line); s == "" || strings.HasPrefix(s, "#") {
				continue
			}
		}
		if strings.HasSuffix(line, `\`) {
			pending.WriteString(strings.TrimSuffix(line, `\`))
			continue
		}
		pending.WriteString(line)
		text := pending.String()
		pending.Reset()

		r := udevRule{Line: start}
		for rest := text; strings.TrimSpace(rest) != ""; {
			m := udevPairRE.FindStringSubmatch(rest)
			if m == nil {
				t.Fatalf("line %d: cannot parse %q", start, rest)
			}
			p := udevPair{Key: m[1], Attr: m[2], Op: m[3], Value: m[4]}
			checkUdevPair(t, start, p)
			r.Pairs = append(r.Pairs, p)
			rest = rest[len(m[0]):]
		}
		rules = append(rules, r)
	}
	if pending.Len() > 0 {
		t.Fatalf("the file ends in a continued line")
	}
	return rules
}

func checkUdevPair(t *testing.T, line int, p udevPair) {
	t.Helper()
	keys := udevAssignKeys
	if p.Op == "==" || p.Op == "!=" {
		keys = udevMatchKeys
	}
	attr, ok := keys[p.Key]
	switch {
	case !ok:
		t.Errorf("line %d: %s does not take %s", line, p.Key, p.Op)
	case attr == "must" && p.Attr == "":
		t.Errorf("line %d: %s needs {attribute}", line, p.Key)
	case attr == "" && p.Attr != "":
		t.Errorf("line %d: %s takes no {attribute}", line, p.Key)
	}
	if (p.Key == "LABEL" || p.Key == "GOTO") && p.Op != "=" {
		t.Errorf("line %d: %s%s: only = is valid", line, p.Key, p.Op)
	}
}

// udevEvent is a device event as the rules see it.
type udevEvent struct {
	Action, Subsystem, Kernel string
	Env                       map[string]string // the device's properties (DEVTYPE)
	ParentAttrs               map[string]string // attributes up the parent chain (vendor)
}

// udevResult is what the rules did with an event.
type udevResult struct {
	Tags, Wants, Run []string
}

// udevGlob matches udev's patterns: "|" separates alternatives, each a shell glob.
func udevGlob(pattern, s string) bool {
	for _, alt := range strings.Split(pattern, "|") {
		if ok, _ := path.Match(alt, s); ok {
			return true
		}
	}
	return false
}

// runUdevRules plays one event through the rules, for the keys we use.
func runUdevRules(t *testing.T, rules []udevRule, ev udevEvent) udevResult {
	t.Helper()
	labels := map[string]int{}
	for i, r := range rules {
		for _, p := range r.Pairs {
			if p.Key == "LABEL" {
				labels[p.Value] = i
			}
		}
	}
	env := map[string]string{}
	for k, v := range ev.Env {
		env[k] = v
	}
	var res udevResult
	for i := 0; i < len(rules); i++ {
		r := rules[i]
		matched := true
		for _, p := range r.Pairs {
			if p.Op != "==" && p.Op != "!=" {
				continue
			}
			var have string
			var present bool
			switch p.Key {
			case "ACTION":
				have, present = ev.Action, true
			case "SUBSYSTEM":
				have, present = ev.Subsystem, true
			case "KERNEL":
				have, present = ev.Kernel, true
			case "ENV":
				have, present = env[p.Attr]
			case "ATTRS":
				have, present = ev.ParentAttrs[p.Attr]
			default:
				t.Fatalf("line %d: the rule test does not model %s; extend runUdevRules", r.Line, p.Key)
			}
			ok := present && udevGlob(p.Value, have)
			if p.Op == "!=" {
				ok = !ok
			}
			if !ok {
				matched = false
				break
			}
		}
		if !matched {
			continue
		}
		jump := ""
		for _, p := range r.Pairs {
			switch {
			case p.Op == "==" || p.Op == "!=" || p.Key == "LABEL":
			case p.Key == "GOTO":
				jump = p.Value
			case p.Key == "TAG":
				res.Tags = append(res.Tags, p.Value)
			case p.Key == "ENV" && p.Attr == "SYSTEMD_WANTS":
				res.Wants = append(res.Wants, strings.Fields(p.Value)...)
			case p.Key == "RUN":
				res.Run = append(res.Run, p.Value)
			default:
				t.Fatalf("line %d: the rule test does not model %s%s; extend runUdevRules", r.Line, p.Key, p.Op)
			}
		}
		if jump != "" {
			to, ok := labels[jump]
			if !ok {
				t.Fatalf("line %d: GOTO %q has no LABEL", r.Line, jump)
			}
			if to <= i {
				t.Fatalf("line %d: GOTO %q jumps backwards", r.Line, jump)
			}
			i = to - 1 // the loop steps onto the LABEL line
		}
	}
	return res
}

func TestUdevRuleStartsTheRefreshOnGPUChanges(t *testing.T) {
	data, err := os.ReadFile(deployments("udev", udevRules))
	if err != nil {
		t.Fatal(err)
	}
	rules := parseUdevRules(t, data)
	if _, err := os.Stat(deployments("systemd", refreshUnit)); err != nil {
		t.Fatalf("the rule's unit is not shipped: %v", err)
	}
	start := fmt.Sprintf("/bin/systemctl --no-block start %s", refreshUnit)
	intel := map[string]string{"vendor": "0x8086"}
	minor := map[string]string{"DEVTYPE": "drm_minor"}
	for _, tc := range []struct {
		name string
		ev   udevEvent
		want udevResult
	}{
		{"an Intel card appears", udevEvent{"add", "drm", "card0", minor, intel},
			udevResult{Tags: []string{"systemd"}, Wants: []string{refreshUnit}}},
		{"an Intel render node appears", udevEvent{"add", "drm", "renderD128", minor, intel},
			udevResult{Tags: []string{"systemd"}, Wants: []string{refreshUnit}}},
		{"a card goes away", udevEvent{"remove", "drm", "card1", minor, nil},
			udevResult{Run: []string{start}}},
		{"a render node goes away", udevEvent{"remove", "drm", "renderD129", minor, nil},
			udevResult{Run: []string{start}}},
		{"an NVIDIA card appears", udevEvent{"add", "drm", "card1", minor, map[string]string{"vendor": "0x10de"}},
			udevResult{}},
		{"a simpledrm card with no PCI parent appears", udevEvent{"add", "drm", "card0", minor, nil},
			udevResult{}},
		{"a connector appears", udevEvent{"add", "drm", "card0-DP-1", map[string]string{"DEVTYPE": "drm_connector"}, intel},
			udevResult{}},
		{"a monitor is plugged (change)", udevEvent{"change", "drm", "card0", minor, intel},
			udevResult{}},
		{"an old control node appears", udevEvent{"add", "drm", "controlD64", minor, intel},
			udevResult{}},
		{"another subsystem's device appears", udevEvent{"add", "input", "event3", nil, intel},
			udevResult{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := runUdevRules(t, rules, tc.ev)
			if !slices.Equal(got.Tags, tc.want.Tags) || !slices.Equal(got.Wants, tc.want.Wants) || !slices.Equal(got.Run, tc.want.Run) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
