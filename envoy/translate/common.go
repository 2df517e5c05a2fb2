package translate

import (
	"net/netip"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/fleetlb/fleetlb/internal/model"
)

// adsSource is how listeners, clusters and SDS refer to resources served on the ADS stream.
func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

func socketAddress(addr netip.Addr, port uint16, udp bool) *corev3.Address {
	proto := corev3.SocketAddress_TCP
	if udp {
		proto = corev3.SocketAddress_UDP
	}
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Protocol: proto, Address: addr.String(),
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}
}

// typed packs a message into an Any; the message types are fixed at compile
// time, so a failure is a programming error.
func typed(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}

func duration(d model.Duration, def time.Duration) *durationpb.Duration {
	if d == 0 {
		return durationpb.New(def)
	}
	return durationpb.New(d.D())
}
