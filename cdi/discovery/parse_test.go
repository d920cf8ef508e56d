package discovery_test

import (
	"strings"
	"testing"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
)

func TestParseDevNumbers(t *testing.T) {
	tests := []struct {
		name         string
		in           string
		major, minor uint32
		wantErr      string
	}{
		{name: "a card's dev file gives 226:0", in: "226:0\n", major: 226, minor: 0},
		{name: "a render node's dev file gives 226:128", in: "226:128\n", major: 226, minor: 128},
		{name: "the largest Linux numbers are accepted", in: "4095:1048575", major: 4095, minor: 1048575},
		{name: "a missing colon is rejected", in: "226\n", wantErr: "want MAJOR:MINOR"},
		{name: "an empty file is rejected", in: "", wantErr: "want MAJOR:MINOR"},
		{name: "a letter in the major is rejected", in: "x26:0\n", wantErr: "bad major"},
		{name: "a negative minor is rejected", in: "226:-1\n", wantErr: "bad minor"},
		{name: "a third field is rejected", in: "226:0:1\n", wantErr: "bad minor"},
		{name: "a major beyond 12 bits is rejected", in: "4096:0\n", wantErr: "out of range"},
		{name: "a minor beyond 20 bits is rejected", in: "226:1048576\n", wantErr: "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			major, minor, err := discovery.ParseDevNumbers(tt.in)
			if !errMatches(t, err, tt.wantErr) {
				return
			}
			if major != tt.major || minor != tt.minor {
				t.Errorf("ParseDevNumbers(%q) = %d:%d, want %d:%d", tt.in, major, minor, tt.major, tt.minor)
			}
		})
	}
}

func TestParseHexID(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		digits  int
		want    string
		wantErr string
	}{
		{name: "Intel's vendor ID is read as sysfs writes it", in: "0x8086\n", digits: 4, want: "0x8086"},
		{name: "upper-case hex is lower-cased", in: "0X56A0\n", digits: 4, want: "0x56a0"},
		{name: "a class code has six digits", in: "0x030000\n", digits: 6, want: "0x030000"},
		{name: "a missing 0x is rejected", in: "8086\n", digits: 4, wantErr: "want 0x and 4 hex digits"},
		{name: "too many digits are rejected", in: "0x80860\n", digits: 4, wantErr: "want 0x and 4 hex digits"},
		{name: "too few digits are rejected", in: "0x03\n", digits: 6, wantErr: "want 0x and 6 hex digits"},
		{name: "a non-hex digit is rejected", in: "0x80g6\n", digits: 4, wantErr: "want 0x and 4 hex digits"},
		{name: "an empty file is rejected", in: "", digits: 4, wantErr: "got \"\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := discovery.ParseHexID(tt.in, tt.digits)
			if errMatches(t, err, tt.wantErr) && got != tt.want {
				t.Errorf("ParseHexID(%q, %d) = %q, want %q", tt.in, tt.digits, got, tt.want)
			}
		})
	}
}

func TestNormalizeDeviceID(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr bool
	}{
		{name: "an ID with 0x is kept", in: "0x56a0", want: "0x56a0"},
		{name: "an ID without 0x gains it", in: "56A0", want: "0x56a0"},
		{name: "a short ID is rejected", in: "56a", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := discovery.NormalizeDeviceID(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("NormalizeDeviceID(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseNUMANode(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    int
		wantErr bool
	}{
		{name: "-1 means the node is unknown", in: "-1\n", want: -1},
		{name: "node 0 is read", in: "0\n", want: 0},
		{name: "node 3 is read", in: "3\n", want: 3},
		{name: "-2 is rejected", in: "-2\n", wantErr: true},
		{name: "a word is rejected", in: "one\n", wantErr: true},
		{name: "an empty file is rejected", in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := discovery.ParseNUMANode(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("ParseNUMANode(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseCount(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    int
		wantErr bool
	}{
		{name: "zero VFs is read", in: "0\n", want: 0},
		{name: "seven VFs are read", in: "7\n", want: 7},
		{name: "the SR-IOV maximum is accepted", in: "65535\n", want: 65535},
		{name: "more than SR-IOV allows is rejected", in: "65536\n", wantErr: true},
		{name: "a negative count is rejected", in: "-1\n", wantErr: true},
		{name: "a word is rejected", in: "two\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := discovery.ParseCount(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("ParseCount(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseCardAndRenderNames(t *testing.T) {
	tests := []struct {
		name   string
		parse  func(string) (int, bool)
		in     string
		want   int
		wantOK bool
	}{
		{name: "card0 is card 0", parse: discovery.ParseCardName, in: "card0", want: 0, wantOK: true},
		{name: "card10 is card 10", parse: discovery.ParseCardName, in: "card10", want: 10, wantOK: true},
		{name: "a connector is not a card", parse: discovery.ParseCardName, in: "card0-DP-1"},
		{name: "a render node is not a card", parse: discovery.ParseCardName, in: "renderD128"},
		{name: "a control node is not a card", parse: discovery.ParseCardName, in: "controlD64"},
		{name: "the version file is not a card", parse: discovery.ParseCardName, in: "version"},
		{name: "a bare prefix is not a card", parse: discovery.ParseCardName, in: "card"},
		{name: "a leading zero is not a kernel name", parse: discovery.ParseCardName, in: "card01"},
		{name: "a sign is not a digit", parse: discovery.ParseCardName, in: "card+1"},
		{name: "renderD128 is render node 128", parse: discovery.ParseRenderName, in: "renderD128", want: 128, wantOK: true},
		{name: "a card is not a render node", parse: discovery.ParseRenderName, in: "card0"},
		{name: "renderD without digits is not a render node", parse: discovery.ParseRenderName, in: "renderD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.parse(tt.in)
			if ok != tt.wantOK || got != tt.want {
				t.Errorf("parse(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestIsPCIAddress(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{name: "an integrated GPU's address is a PCI address", in: "0000:00:02.0", want: true},
		{name: "a VF's address is a PCI address", in: "0000:03:00.7", want: true},
		{name: "the highest device number is accepted", in: "0000:ff:1f.0", want: true},
		{name: "a device number above 0x1f is rejected", in: "0000:00:20.0"},
		{name: "a function above 7 is rejected", in: "0000:00:02.8"},
		{name: "upper-case hex is not how sysfs names functions", in: "0000:0A:00.0"},
		{name: "an address without a domain is rejected", in: "00:02.0"},
		{name: "a root bus directory is not a function", in: "pci0000:00"},
		{name: "a platform device is not a PCI function", in: "simple-framebuffer.0"},
		{name: "an empty string is rejected", in: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := discovery.IsPCIAddress(tt.in); got != tt.want {
				t.Errorf("IsPCIAddress(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

// errMatches checks err against a wanted substring ("" wants no error) and
// reports whether the test should go on to check the value.
func errMatches(t *testing.T, err error, want string) bool {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want != "" && err == nil:
		t.Fatalf("no error, want one containing %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Fatalf("error %q does not contain %q", err, want)
	}
	return want == ""
}
