package health_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health"
)

// fieldsTotal is the reading ParseAERTotal gives, spelled with
// strings.Fields: the first line of exactly two fields whose first starts
// TOTAL_ERR_, its second a decimal count.
func fieldsTotal(content string) (uint64, bool) {
	for line := range strings.Lines(content) {
		f := strings.Fields(line)
		if len(f) != 2 || !strings.HasPrefix(f[0], "TOTAL_ERR_") {
			continue
		}
		n, err := strconv.ParseUint(f[1], 10, 64)
		return n, err == nil
	}
	return 0, false
}

var aerFiles = []string{
	"RxErr 0\nBadTLP 0\nBadDLLP 0\nRollover 0\nTimeout 0\nNonFatalErr 0\nCorrIntErr 0\nHeaderOF 0\nTOTAL_ERR_COR 7\n",
	"Undefined 0\nDLP 0\nSDES 0\nTLP 0\nFCP 0\nCmpltTO 0\nCmpltAbrt 0\nUnxCmplt 0\nRxOF 0\nMalfTLP 0\nECRC 0\nUnsupReq 0\nACSViol 0\nUncorrIntErr 0\nBlockedTLP 0\nAtomicOpBlocked 0\nTLPBlockedErr 0\nPoisonTLPBlocked 0\nTOTAL_ERR_NONFATAL 3\n",
	"Bad TLP 0\nTOTAL_ERR_FATAL 18446744073709551615",
	"  TOTAL_ERR_COR \t 12  \r\n",
	"TOTAL_ERR_COR 1 2\nTOTAL_ERR_COR 4\n",
	"TOTAL_ERR_COR x\n",
	"TOTAL_ERR_COR 18446744073709551616\n",
	"TOTAL_ERR_COR\n",
	"TOTAL_ERR_\u00a0COR 5\n",
	"TOTAL_ERR_COR\u20035\n",
	"",
	"\xff\xfe TOTAL_ERR_COR 1\n",
}

func TestParseAERTotalReadsTheTotalLine(t *testing.T) {
	for _, content := range aerFiles {
		want, ok := fieldsTotal(content)
		got, err := health.ParseAERTotal(content)
		if ok != (err == nil) || ok && got != want {
			t.Errorf("ParseAERTotal(%q) = %d, %v; want %d (ok %v)", content, got, err, want, ok)
		}
	}
}

// The parser reads bytes as sysfs gave them and splits lines by hand, so
// that a Check allocates nothing per line; it must still read every file
// exactly as strings.Fields would.
func FuzzParseAERTotal(f *testing.F) {
	for _, c := range aerFiles {
		f.Add(c)
	}
	f.Fuzz(func(t *testing.T, content string) {
		want, ok := fieldsTotal(content)
		got, err := health.ParseAERTotal(content)
		if ok != (err == nil) || ok && got != want {
			t.Fatalf("ParseAERTotal(%q) = %d, %v; strings.Fields reads %d (ok %v)", content, got, err, want, ok)
		}
	})
}
