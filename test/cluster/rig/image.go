package rig

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

// ImageFile is one entry of a single-layer image: a regular file (Data), a
// symlink (Link) or, with neither, a directory.
type ImageFile struct {
	Path string
	Mode int64
	Data []byte
	Link string
}

// Image describes a one-layer OCI image built from local files, so the rig
// never needs a registry.
type Image struct {
	// Ref is the full name containerd stores it under, e.g. "e2e.local/busybox:1".
	Ref        string
	Files      []ImageFile
	Entrypoint []string
	Cmd        []string
	Env        []string
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

// WriteOCIArchive writes img as an OCI image-layout tarball that
// `ctr images import` loads under img.Ref.
func WriteOCIArchive(path string, img Image) error {
	layer, err := layerTar(img.Files)
	if err != nil {
		return fmt.Errorf("building layer of %s: %w", img.Ref, err)
	}
	layerDigest := digest(layer)

	config, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config": map[string]any{
			"Entrypoint": img.Entrypoint,
			"Cmd":        img.Cmd,
			"Env":        img.Env,
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	if err != nil {
		return err
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor{MediaType: "application/vnd.oci.image.config.v1+json", Digest: digest(config), Size: int64(len(config))},
		"layers":        []descriptor{{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: layerDigest, Size: int64(len(layer))}},
	})
	if err != nil {
		return err
	}
	tag := img.Ref[strings.LastIndex(img.Ref, ":")+1:]
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests": []descriptor{{
			MediaType: "application/vnd.oci.image.manifest.v1+json",
			Digest:    digest(manifest),
			Size:      int64(len(manifest)),
			Platform:  &platform{Architecture: runtime.GOARCH, OS: "linux"},
			Annotations: map[string]string{
				"io.containerd.image.name":          img.Ref,
				"org.opencontainers.image.ref.name": tag,
			},
		}},
	})
	if err != nil {
		return err
	}

	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	entries := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", index},
		{blobPath(layerDigest), layer},
		{blobPath(digest(config)), config},
		{blobPath(digest(manifest)), manifest},
	}
	for _, e := range entries {
		if err := writeTarFile(tw, ImageFile{Path: e.name, Mode: 0o644, Data: e.data}); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, out.Bytes(), 0o644)
}

func layerTar(files []ImageFile) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		if err := writeTarFile(tw, f); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeTarFile(tw *tar.Writer, f ImageFile) error {
	// A fixed time keeps the digests of identical inputs identical.
	hdr := &tar.Header{Name: f.Path, Mode: f.Mode, ModTime: time.Unix(0, 0)}
	switch {
	case f.Link != "":
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, f.Link
	case f.Data == nil:
		hdr.Typeflag = tar.TypeDir
	default:
		hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(f.Data))
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("tar header %s: %w", f.Path, err)
	}
	if hdr.Typeflag == tar.TypeReg {
		if _, err := tw.Write(f.Data); err != nil {
			return fmt.Errorf("tar data %s: %w", f.Path, err)
		}
	}
	return nil
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func blobPath(d string) string { return "blobs/sha256/" + strings.TrimPrefix(d, "sha256:") }
