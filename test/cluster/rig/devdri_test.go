package rig

import (
	"reflect"
	"testing"
)

const sampleListing = `total 4
drwxr-xr-x    2 root     root          4096 Nov 26 15:16 by-path
crw-r--r--    1 root     root      226, 129 Nov 26 15:16 renderD129
crw-r--r--    1 root     root      226,   1 Nov 26 15:16 card1
--- by-path
total 0
lrwxrwxrwx    1 root     root             8 Nov 26 15:16 pci-0000:03:00.0-card -> ../card1
crw-rw----    1 root     root      226, 129 Nov 26 15:16 pci-0000:03:00.0-render
=== end
crw-r--r--    1 root     root      226,   2 Nov 26 15:16 card2
`

var sampleGPUs = []NodeGPU{
	{PCI: "0000:00:02.0", Driver: "i915", Nodes: []DevNode{{"card0", "226:0"}, {"renderD128", "226:128"}}},
	{PCI: "0000:03:00.0", Driver: "xe", Nodes: []DevNode{{"card1", "226:1"}, {"renderD129", "226:129"}}},
}

func TestParseListingReadsNodesAndByPathUpToTheEndMarker(t *testing.T) {
	l := ParseListing(sampleListing)
	want := []DevNode{{"card1", "226:1"}, {"renderD129", "226:129"}}
	if !reflect.DeepEqual(l.Nodes, want) {
		t.Errorf("nodes = %v, want %v", l.Nodes, want)
	}
	if l.ByPath["pci-0000:03:00.0-card"] != "../card1" {
		t.Errorf("by-path links = %v", l.ByPath)
	}
	if l.ByPathDevs["pci-0000:03:00.0-render"] != "226:129" {
		t.Errorf("by-path devices = %v", l.ByPathDevs)
	}
}

func TestMatchGPUs(t *testing.T) {
	tests := []struct {
		name    string
		nodes   []DevNode
		want    []string
		wantErr bool
	}{
		{name: "a whole GPU matches", nodes: []DevNode{{"card1", "226:1"}, {"renderD129", "226:129"}}, want: []string{"0000:03:00.0"}},
		{name: "nothing matches nothing", nodes: nil, want: nil},
		{name: "half a GPU is an error", nodes: []DevNode{{"card1", "226:1"}}, wantErr: true},
		{name: "right name with wrong numbers is an error", nodes: []DevNode{{"card1", "226:7"}, {"renderD129", "226:129"}}, wantErr: true},
		{name: "a node of no GPU is an error", nodes: []DevNode{{"card9", "226:9"}}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := MatchGPUs(Listing{Nodes: tt.nodes}, sampleGPUs)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			var pcis []string
			for _, g := range got {
				pcis = append(pcis, g.PCI)
			}
			if !reflect.DeepEqual(pcis, tt.want) {
				t.Errorf("got %v, want %v", pcis, tt.want)
			}
		})
	}
}
