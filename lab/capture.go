//go:build linux

package lab

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Packet is one captured IPv4 TCP or UDP packet, or an ICMP one (ports 0).
type Packet struct {
	Time     time.Time
	Out      bool // sent by this host on the device (else received)
	Proto    string
	Src, Dst netip.AddrPort
	Flags    string // TCP flags as tcpdump writes them: S, S., ., P., F., R
	Len      int    // IP length
}

// String is the packet in tcpdump's style (tcpdump -nn -i any).
func (p Packet) String() string {
	dir := "In "
	if p.Out {
		dir = "Out"
	}
	s := fmt.Sprintf("%s %s IP %s.%d > %s.%d:", p.Time.Format("15:04:05.000000"), dir, p.Src.Addr(), p.Src.Port(), p.Dst.Addr(), p.Dst.Port())
	switch p.Proto {
	case "tcp":
		s += fmt.Sprintf(" Flags [%s], length %d", p.Flags, p.Len)
	default:
		s += fmt.Sprintf(" %s, length %d", p.Proto, p.Len)
	}
	return s
}

// CaptureFilter chooses what Capture reports.
type CaptureFilter struct {
	Port    uint16 // TCP/UDP port on either side; 0: any
	SYNOnly bool   // only TCP segments with SYN set (SYN and SYN-ACK)
}

func (f CaptureFilter) match(p Packet) bool {
	if f.Port != 0 && p.Src.Port() != f.Port && p.Dst.Port() != f.Port {
		return false
	}
	if f.SYNOnly && (p.Proto != "tcp" || !strings.HasPrefix(p.Flags, "S")) {
		return false
	}
	return true
}

// Capture reads IPv4 packets on device dev of the current network
// namespace with a packet socket (what tcpdump uses; it needs CAP_NET_RAW
// in the namespace's user namespace, which the lab's hosts give), and
// calls fn for each one that passes f, until fn returns false, ctx ends
// or the socket fails. ready is called once the socket is bound.
//
// It exists because tcpdump itself cannot run in the lab's user namespace:
// it insists on dropping privileges to its own user with initgroups(3),
// and setgroups(2) is denied in a user namespace an ordinary user made.
func Capture(ctx context.Context, dev string, f CaptureFilter, ready func(), fn func(Packet) bool) error {
	ifi, err := net.InterfaceByName(dev)
	if err != nil {
		// net's own error ("route ip+net: no such network interface")
		// names neither the device nor what there is.
		var names []string
		if ifs, e := net.Interfaces(); e == nil {
			for _, i := range ifs {
				names = append(names, i.Name)
			}
		}
		return fmt.Errorf("capture: no device %q in this host (it has: %s)", dev, strings.Join(names, ", "))
	}
	// SOCK_DGRAM: the kernel strips the link-layer header, so Ethernet
	// (TAP, veth, bridge) and TUN devices look alike.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return fmt.Errorf("packet socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		return fmt.Errorf("bind to %s: %w", dev, err)
	}
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	// Kernel receive timestamps, so that the times of captures in
	// different hosts compare (a userspace clock read would not).
	stamps := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1) == nil
	if ready != nil {
		ready()
	}
	buf := make([]byte, 65536)
	oob := make([]byte, 256)
	for ctx.Err() == nil {
		n, oobn, _, from, err := unix.Recvmsg(fd, buf, oob, 0)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		ll, ok := from.(*unix.SockaddrLinklayer)
		if !ok || ll.Ifindex != ifi.Index || ll.Protocol != htons(unix.ETH_P_IP) {
			continue
		}
		p, ok := parseIPv4(buf[:n])
		if !ok {
			continue
		}
		p.Time = time.Now()
		if stamps {
			if t, ok := kernelStamp(oob[:oobn]); ok {
				p.Time = t
			}
		}
		p.Out = ll.Pkttype == unix.PACKET_OUTGOING
		if f.match(p) && !fn(p) {
			return nil
		}
	}
	return nil
}

func kernelStamp(oob []byte) (time.Time, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return time.Time{}, false
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
			sec := int64(binary.NativeEndian.Uint64(m.Data[0:]))
			nsec := int64(binary.NativeEndian.Uint64(m.Data[8:]))
			return time.Unix(sec, nsec), true
		}
	}
	return time.Time{}, false
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func parseIPv4(b []byte) (Packet, bool) {
	var p Packet
	if len(b) < 20 || b[0]>>4 != 4 {
		return p, false
	}
	ihl := int(b[0]&15) * 4
	tot := int(binary.BigEndian.Uint16(b[2:]))
	if ihl < 20 || len(b) < ihl || tot < ihl {
		return p, false
	}
	p.Len = tot
	src := netip.AddrFrom4([4]byte(b[12:16]))
	dst := netip.AddrFrom4([4]byte(b[16:20]))
	l4 := b[ihl:]
	switch b[9] {
	case unix.IPPROTO_TCP:
		if len(l4) < 14 {
			return p, false
		}
		p.Proto = "tcp"
		p.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:]))
		p.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:]))
		p.Flags = tcpFlags(l4[13])
		p.Len = tot
	case unix.IPPROTO_UDP:
		if len(l4) < 8 {
			return p, false
		}
		p.Proto = "udp"
		p.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:]))
		p.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:]))
	case unix.IPPROTO_ICMP:
		p.Proto = "ICMP"
		p.Src, p.Dst = netip.AddrPortFrom(src, 0), netip.AddrPortFrom(dst, 0)
	default:
		p.Proto = fmt.Sprintf("proto %d", b[9])
		p.Src, p.Dst = netip.AddrPortFrom(src, 0), netip.AddrPortFrom(dst, 0)
	}
	return p, true
}

// tcpFlags writes flags as tcpdump does: S, F, R, P, U then "." for ACK.
func tcpFlags(f byte) string {
	var s string
	for _, x := range []struct {
		bit byte
		c   string
	}{{0x02, "S"}, {0x01, "F"}, {0x04, "R"}, {0x08, "P"}, {0x20, "U"}} {
		if f&x.bit != 0 {
			s += x.c
		}
	}
	if f&0x10 != 0 {
		s += "."
	}
	if s == "" {
		s = "none"
	}
	return s
}

// RunCapture is `tunvs lab capture`'s inner half: it prints packets on dev
// as they pass, count of them (0: no limit) or until timeout (0: none).
func RunCapture(ctx context.Context, dev string, f CaptureFilter, count int, timeout time.Duration, w io.Writer) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	n := 0
	return Capture(ctx, dev, f, func() {
		fmt.Fprintf(w, "listening on %s\n", dev)
	}, func(p Packet) bool {
		fmt.Fprintln(w, p)
		n++
		return count == 0 || n < count
	})
}
