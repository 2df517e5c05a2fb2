// Package pbcheck holds the check every fleetlb-proxy validator shares: a resource
// may only set the fields the proxy implements, so anything else is NACKed by name
// instead of being silently ignored.
package pbcheck

import (
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Unsupported returns an error naming the first populated field of m outside allowed.
func Unsupported(where string, m proto.Message, allowed ...string) error {
	var err error
	m.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if !slices.Contains(allowed, string(fd.Name())) {
			err = fmt.Errorf("%s: field %s is not supported", where, fd.Name())
			return false
		}
		return true
	})
	return err
}
