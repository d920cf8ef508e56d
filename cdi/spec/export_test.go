package spec

import specs "tags.cncf.io/container-device-interface/specs-go"

// MarshalUnchecked is Marshal without Check, for the tests that encode
// specs the CDI library refuses: FuzzMarshal's strings, and the specs on
// which Check is held to the library's verdict.
func MarshalUnchecked(s *specs.Spec, f Format) ([]byte, error) {
	if err := supported(s); err != nil {
		return nil, err
	}
	return encode(s, f)
}
