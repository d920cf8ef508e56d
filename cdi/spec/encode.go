package spec

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	specs "tags.cncf.io/container-device-interface/specs-go"
)

// ErrUnsupportedField is returned (wrapped, naming the field) by Marshal
// for a spec that sets a field Build never sets: the encoder writes
// exactly the fields below and refuses to drop any other silently.
var ErrUnsupportedField = errors.New("field not supported by the spec encoder")

// Marshal encodes a spec as Build makes them: kind, cdiVersion, devices
// with device nodes (path, hostPath, type, major, minor, permissions) and
// mounts (hostPath, containerPath, options, type), and edits for the whole
// spec of the same kind. It refuses a spec that the CDI library would
// refuse (see Check), so that its bytes can go to disk as they are.
//
// It writes the bytes directly from the typed spec. encoding/json spends
// most of its time in reflection, and sigs.k8s.io/yaml goes through JSON
// and a generic tree; for 512 GPUs the two took 10 and 180 ms. JSON comes
// out one device per line: compact for the runtimes that parse it on
// every change, and still one line per name for a reader or a diff. YAML
// comes out in block style, keys in the order of the CDI spec's fields.
// Both read back, through the CDI library's parser and through the older
// sigs.k8s.io/yaml one that runtimes of cdiVersion 0.5.0 bundle, to
// exactly the spec given (encode_test.go).
func Marshal(s *specs.Spec, f Format) ([]byte, error) {
	if err := encodable(s); err != nil {
		return nil, err
	}
	return encode(s, f)
}

// Encode writes what Marshal returns to w, a few KiB at a time, after the
// same checks: the spec's bytes never need to be in memory whole. The
// plugin encodes each spec twice, for its digest and then into the file,
// which allocated as much as the spec again each time (about 0.13 MB at
// 64 GPUs, garbage that stays resident until Go's first collection).
func Encode(w io.Writer, s *specs.Spec, f Format) error {
	if err := encodable(s); err != nil {
		return err
	}
	e := encoder{w: w, buf: make([]byte, 0, spillAt+spillAt/2)}
	if err := e.run(s, f); err != nil {
		return err
	}
	e.flush()
	if e.err != nil {
		return fmt.Errorf("encoding CDI spec %s: %w", s.Kind, e.err)
	}
	return nil
}

// encodable is what Marshal and Encode refuse before writing a byte: a
// field the encoder does not write, or a spec Check refuses.
func encodable(s *specs.Spec) error {
	err := supported(s)
	if err == nil {
		err = Check(s)
	}
	if err != nil {
		return fmt.Errorf("encoding CDI spec %s: %w", s.Kind, err)
	}
	return nil
}

// encode writes a spec whose fields the encoder supports.
func encode(s *specs.Spec, f Format) ([]byte, error) {
	e := encoder{buf: make([]byte, 0, sizeHint(s, f == FormatYAML))}
	if err := e.run(s, f); err != nil {
		return nil, err
	}
	return e.buf, nil
}

func (e *encoder) run(s *specs.Spec, f Format) error {
	switch f {
	case FormatJSON:
		e.json(s)
	case FormatYAML:
		e.yaml(s)
	default:
		return fmt.Errorf("invalid spec format %q", f)
	}
	if e.err != nil {
		return fmt.Errorf("encoding CDI spec %s: %w", s.Kind, e.err)
	}
	return nil
}

// supported reports the first field of s that the encoder does not write.
// TestTheEncoderKnowsEveryFieldOfTheCDISpec fails when a CDI library
// update adds a field, so that a new field is refused here, never lost.
func supported(s *specs.Spec) error {
	if len(s.Annotations) > 0 {
		return fmt.Errorf("%w: the spec sets annotations", ErrUnsupportedField)
	}
	if err := supportedEdits(&s.ContainerEdits, nil); err != nil {
		return err
	}
	for i := range s.Devices {
		d := &s.Devices[i]
		if len(d.Annotations) > 0 {
			return fmt.Errorf("%w: device %q sets annotations", ErrUnsupportedField, d.Name)
		}
		if err := supportedEdits(&d.ContainerEdits, d); err != nil {
			return err
		}
	}
	return nil
}

// supportedEdits checks the edits of device d, or of the spec when d is
// nil.
func supportedEdits(c *specs.ContainerEdits, d *specs.Device) error {
	where := func() string {
		if d == nil {
			return "the spec"
		}
		return fmt.Sprintf("device %q", d.Name)
	}
	field := ""
	switch {
	case len(c.Env) > 0:
		field = "env"
	case len(c.NetDevices) > 0:
		field = "netDevices"
	case len(c.Hooks) > 0:
		field = "hooks"
	case c.IntelRdt != nil:
		field = "intelRdt"
	case len(c.AdditionalGIDs) > 0:
		field = "additionalGids"
	}
	for _, n := range c.DeviceNodes {
		switch {
		case field != "":
		case n == nil:
			return fmt.Errorf("%s: a device node is nil", where())
		case n.FileMode != nil:
			field = "deviceNodes.fileMode"
		case n.UID != nil:
			field = "deviceNodes.uid"
		case n.GID != nil:
			field = "deviceNodes.gid"
		}
	}
	for _, m := range c.Mounts {
		if m == nil && field == "" {
			return fmt.Errorf("%s: a mount is nil", where())
		}
	}
	if field != "" {
		return fmt.Errorf("%w: %s sets containerEdits.%s", ErrUnsupportedField, where(), field)
	}
	return nil
}

// encoder appends one spec to buf; the first error sticks. With w set,
// buf goes to w whenever a device ends with spillAt bytes or more in it.
type encoder struct {
	buf []byte
	err error
	w   io.Writer
}

// spillAt is how full buf gets before a streaming encoder writes it out:
// one device of the spec is a few hundred bytes.
const spillAt = 4 << 10

func (e *encoder) raw(s string) { e.buf = append(e.buf, s...) }

// spill writes buf out before a device, node or mount, once it holds
// spillAt: the device of all GPUs alone is 26 kB at 64 GPUs.
func (e *encoder) spill() {
	if e.w != nil && len(e.buf) >= spillAt {
		e.flush()
	}
}

func (e *encoder) flush() {
	if e.w == nil || e.err != nil {
		return
	}
	_, e.err = e.w.Write(e.buf)
	e.buf = e.buf[:0]
}

func (e *encoder) json(s *specs.Spec) {
	e.raw(`{"cdiVersion":`)
	e.quoted(s.Version)
	e.raw(`,"kind":`)
	e.quoted(s.Kind)
	e.raw(`,"devices":[`)
	for i := range s.Devices {
		d := &s.Devices[i]
		e.item(i, "\n{\"name\":")
		e.quoted(d.Name)
		e.raw(`,"containerEdits":`)
		e.jsonEdits(&d.ContainerEdits)
		e.raw("}")
		e.spill()
	}
	e.raw("\n]")
	if !emptyEdits(&s.ContainerEdits) {
		e.raw(`,"containerEdits":`)
		e.jsonEdits(&s.ContainerEdits)
	}
	e.raw("}\n")
}

// sizeHint is a little more than the JSON encoding's size (YAML takes
// about a tenth more), so that the buffer is allocated once.
func sizeHint(s *specs.Spec, yaml bool) int {
	n := 64 + len(s.Version) + len(s.Kind)
	opt := func(v string, key int) int {
		if v == "" {
			return 0
		}
		return key + len(v)
	}
	edits := func(c *specs.ContainerEdits) {
		n += 48
		for _, d := range c.DeviceNodes {
			n += 32 + len(d.Path) + opt(d.HostPath, 16) + opt(d.Type, 12) + opt(d.Permissions, 20)
			if d.Major != 0 || d.Minor != 0 {
				n += 60
			}
		}
		for _, m := range c.Mounts {
			n += 52 + len(m.HostPath) + len(m.ContainerPath) + opt(m.Type, 12)
			for _, o := range m.Options {
				n += 4 + len(o)
			}
		}
	}
	for i := range s.Devices {
		n += 24 + len(s.Devices[i].Name)
		edits(&s.Devices[i].ContainerEdits)
	}
	edits(&s.ContainerEdits)
	if yaml {
		n += n / 8
	}
	return n
}

func (e *encoder) jsonEdits(c *specs.ContainerEdits) {
	e.raw("{")
	sep := ""
	if len(c.DeviceNodes) > 0 {
		e.raw(`"deviceNodes":[`)
		for i, n := range c.DeviceNodes {
			e.spill()
			e.item(i, `{"path":`)
			e.quoted(n.Path)
			if n.HostPath != "" {
				e.raw(`,"hostPath":`)
				e.quoted(n.HostPath)
			}
			if n.Type != "" {
				e.raw(`,"type":`)
				e.quoted(n.Type)
			}
			if n.Major != 0 {
				e.raw(`,"major":`)
				e.buf = strconv.AppendInt(e.buf, n.Major, 10)
			}
			if n.Minor != 0 {
				e.raw(`,"minor":`)
				e.buf = strconv.AppendInt(e.buf, n.Minor, 10)
			}
			if n.Permissions != "" {
				e.raw(`,"permissions":`)
				e.quoted(n.Permissions)
			}
			e.raw("}")
		}
		e.raw("]")
		sep = ","
	}
	if len(c.Mounts) > 0 {
		e.raw(sep)
		e.raw(`"mounts":[`)
		for i, m := range c.Mounts {
			e.spill()
			e.item(i, `{"hostPath":`)
			e.quoted(m.HostPath)
			e.raw(`,"containerPath":`)
			e.quoted(m.ContainerPath)
			if len(m.Options) > 0 {
				e.raw(`,"options":`)
				e.list(m.Options, true)
			}
			if m.Type != "" {
				e.raw(`,"type":`)
				e.quoted(m.Type)
			}
			e.raw("}")
		}
		e.raw("]")
	}
	e.raw("}")
}

// item starts element i of a JSON list with start, after a comma from
// the second element on.
func (e *encoder) item(i int, start string) {
	if i > 0 {
		e.raw(",")
	}
	e.raw(start)
}

func emptyEdits(c *specs.ContainerEdits) bool { return len(c.DeviceNodes) == 0 && len(c.Mounts) == 0 }

// list writes a flow sequence of strings: quoted and compact for JSON,
// plain where it can be for YAML.
func (e *encoder) list(items []string, json bool) {
	e.raw("[")
	for i, s := range items {
		switch {
		case json && i > 0:
			e.raw(",")
		case i > 0:
			e.raw(", ")
		}
		if json || !plainInFlow(s) {
			e.quoted(s)
		} else {
			e.raw(s)
		}
	}
	e.raw("]")
}

func (e *encoder) yaml(s *specs.Spec) {
	e.raw("cdiVersion: ")
	e.scalar(s.Version)
	e.raw("\nkind: ")
	e.scalar(s.Kind)
	e.raw("\ndevices:")
	if len(s.Devices) == 0 {
		e.raw(" []")
	}
	for i := range s.Devices {
		d := &s.Devices[i]
		e.raw("\n- name: ")
		e.scalar(d.Name)
		e.raw("\n  containerEdits:")
		e.yamlEdits(&d.ContainerEdits, "    ")
		e.spill()
	}
	if !emptyEdits(&s.ContainerEdits) {
		e.raw("\ncontainerEdits:")
		e.yamlEdits(&s.ContainerEdits, "  ")
	}
	e.raw("\n")
}

// yamlEdits writes the value of a containerEdits key whose fields go at
// indent.
func (e *encoder) yamlEdits(c *specs.ContainerEdits, indent string) {
	if emptyEdits(c) {
		e.raw(" {}")
		return
	}
	if len(c.DeviceNodes) > 0 {
		e.key(indent, "deviceNodes:")
		for _, n := range c.DeviceNodes {
			e.spill()
			e.key(indent, "- path: ")
			e.scalar(n.Path)
			e.field(indent, "  hostPath: ", n.HostPath)
			e.field(indent, "  type: ", n.Type)
			if n.Major != 0 {
				e.key(indent, "  major: ")
				e.buf = strconv.AppendInt(e.buf, n.Major, 10)
			}
			if n.Minor != 0 {
				e.key(indent, "  minor: ")
				e.buf = strconv.AppendInt(e.buf, n.Minor, 10)
			}
			e.field(indent, "  permissions: ", n.Permissions)
		}
	}
	if len(c.Mounts) > 0 {
		e.key(indent, "mounts:")
		for _, m := range c.Mounts {
			e.spill()
			e.key(indent, "- hostPath: ")
			e.scalar(m.HostPath)
			e.key(indent, "  containerPath: ")
			e.scalar(m.ContainerPath)
			if len(m.Options) > 0 {
				e.key(indent, "  options: ")
				e.list(m.Options, false)
			}
			e.field(indent, "  type: ", m.Type)
		}
	}
}

// key starts a line at indent.
func (e *encoder) key(indent, key string) {
	e.buf = append(e.buf, '\n')
	e.buf = append(e.buf, indent...)
	e.buf = append(e.buf, key...)
}

// field writes an optional key and its value on a line of its own.
func (e *encoder) field(indent, key, v string) {
	if v == "" {
		return
	}
	e.key(indent, key)
	e.scalar(v)
}

// scalar writes a string for YAML (and JSON's flow lists): plain when no
// YAML parser, 1.1 or 1.2, can read it as anything but that string, else
// quoted.
func (e *encoder) scalar(s string) {
	if plain(s) {
		e.raw(s)
		return
	}
	e.quoted(s)
}

// plain reports whether s can stand unquoted in YAML. Only a conservative
// set qualifies: a path or a word, which YAML 1.1 (the parser of runtimes
// bundling cdiVersion 0.5.0) never reads as a bool, null, number or date,
// and which holds nothing YAML treats as syntax: ": " or a trailing ":",
// " #", flow indicators, quotes, spaces.
func plain(s string) bool {
	if s == "" || !(s[0] == '/' || isLetter(s[0])) || s[len(s)-1] == ':' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(isLetter(c) || '0' <= c && c <= '9' || c == '/' || c == '.' || c == '_' || c == '-' || c == ':') {
			return false
		}
	}
	if len(s) > len("false") {
		return true
	}
	for _, w := range yaml11Words {
		if strings.EqualFold(s, w) {
			return false
		}
	}
	return true
}

// plainInFlow is plain for an item of a flow list: YAML 1.1 parsers
// refuse a ':' inside a plain scalar there.
func plainInFlow(s string) bool { return plain(s) && !strings.Contains(s, ":") }

// yaml11Words are the plain words YAML 1.1 reads as bools or null.
var yaml11Words = []string{"y", "yes", "n", "no", "true", "false", "on", "off", "null"}

func isLetter(c byte) bool { return 'A' <= c&^0x20 && c&^0x20 <= 'Z' }

const hex = "0123456789abcdef"

// quoted writes s double-quoted, escaped so that JSON and YAML (1.1 and
// 1.2) read back exactly s: quotes, backslashes and every character YAML
// does not allow raw (controls, DEL, C1 controls, the line and paragraph
// separators, the byte order mark, U+FFFE/U+FFFF) as \uXXXX. YAML reads
// JSON input too, which is why JSON gets the same escaping. A string that
// is not UTF-8 cannot be written as either and is an error.
func (e *encoder) quoted(s string) {
	if !utf8.ValidString(s) {
		if e.err == nil {
			e.err = fmt.Errorf("%q is not valid UTF-8", s)
		}
		return
	}
	e.buf = append(e.buf, '"')
	if safeASCII(s) {
		e.buf = append(e.buf, s...)
		e.buf = append(e.buf, '"')
		return
	}
	start := 0
	for i, r := range s {
		var esc string
		switch {
		case r == '"':
			esc = `\"`
		case r == '\\':
			esc = `\\`
		case r == '\n':
			esc = `\n`
		case r == '\t':
			esc = `\t`
		case r < 0x20 || 0x7f <= r && r <= 0x9f || r == 0x2028 || r == 0x2029 || r == 0xfeff || r == 0xfffe || r == 0xffff:
			e.buf = append(e.buf, s[start:i]...)
			e.buf = append(e.buf, '\\', 'u', hex[r>>12], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
			start = i + utf8.RuneLen(r)
			continue
		default:
			continue
		}
		e.buf = append(e.buf, s[start:i]...)
		e.buf = append(e.buf, esc...)
		start = i + 1
	}
	e.buf = append(e.buf, s[start:]...)
	e.buf = append(e.buf, '"')
}

// safeASCII reports whether s needs no escaping at all: printable ASCII
// without quotes or backslashes, as every path and name of a real node.
func safeASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}
