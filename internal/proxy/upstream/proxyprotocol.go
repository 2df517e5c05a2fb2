package upstream

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
)

// v2Signature starts every PROXY protocol v2 header.
var v2Signature = []byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}

func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// proxyHeader encodes the PROXY protocol header (HAProxy's spec) for a TCP
// connection from src to dst; unknown addresses become UNKNOWN / LOCAL.
func proxyHeader(version int, src, dst net.Addr) []byte {
	s, d := addrPort(src), addrPort(dst)
	sa, da := s.Addr().Unmap(), d.Addr().Unmap()
	known := sa.IsValid() && da.IsValid() && sa.Is4() == da.Is4()
	if version == 1 {
		if !known {
			return []byte("PROXY UNKNOWN\r\n")
		}
		fam := "TCP4"
		if !sa.Is4() {
			fam = "TCP6"
		}
		return []byte(fmt.Sprintf("PROXY %s %s %s %d %d\r\n", fam, sa, da, s.Port(), d.Port()))
	}
	h := append([]byte{}, v2Signature...)
	if !known {
		return append(h, 0x20, 0x00, 0x00, 0x00) // LOCAL, UNSPEC, no addresses
	}
	body := append(append([]byte{}, sa.AsSlice()...), da.AsSlice()...)
	body = binary.BigEndian.AppendUint16(body, s.Port())
	body = binary.BigEndian.AppendUint16(body, d.Port())
	fam := byte(0x11) // TCP over IPv4
	if !sa.Is4() {
		fam = 0x21 // TCP over IPv6
	}
	h = append(h, 0x21, fam) // version 2, PROXY command
	h = binary.BigEndian.AppendUint16(h, uint16(len(body)))
	return append(h, body...)
}
