// Package pbcheck holds the check every fleetlb-proxy validator shares: a resource
// may only set the fields the proxy implements, so anything else is NACKed by name
// instead of being silently ignored.
package pbcheck

import (
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/wrapperspb"
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

// MinBufferLimit is the smallest per_connection_buffer_limit_bytes the HTTP
// listeners and clusters honour: net/http and the body copies buffer at most
// 32 KiB per connection and direction (HTTP/2 flow-control windows, which
// Envoy bounds separately, aside), so any limit from there up holds; a smaller
// one cannot be met.
const MinBufferLimit = 32 << 10

// BufferLimit checks a per_connection_buffer_limit_bytes against MinBufferLimit.
func BufferLimit(where string, v *wrapperspb.UInt32Value) error {
	if v != nil && v.GetValue() < MinBufferLimit {
		return fmt.Errorf("%s: per_connection_buffer_limit_bytes %d is below %d, the smallest fleetlb-proxy can honour", where, v.GetValue(), MinBufferLimit)
	}
	return nil
}
