package netstack

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/tunvs/tunvs/internal/pcapng"
	"github.com/tunvs/tunvs/tun"
)

// pcap link types.
const (
	LinkTypeEthernet = pcapng.LinkTypeEthernet // TAP: Ethernet frames
	LinkTypeRaw      = pcapng.LinkTypeRaw      // TUN: raw IP packets, v4 or v6
)

// PcapWriter is a Capture that writes one pcapng file: an interface per
// link, named after it, with its own link type (raw IP for a TUN device,
// Ethernet for a TAP), and every frame with its direction (inbound: read
// from the device; outbound: written to it). Wireshark and tshark read
// it. tcpdump (libpcap 1.10) reads a pcapng file only when all its
// interfaces share one link type, and it also refuses several raw-IP
// interfaces (it compares the first one's type, mapped to DLT_RAW, with
// the others' LINKTYPE_RAW); a one-link or all-TAP capture it reads.
type PcapWriter struct {
	mu     sync.Mutex
	f      *os.File
	w      *pcapng.Writer
	index  map[string]int // link name -> interface ID
	closed bool
	now    func() time.Time
}

// snapLen is the largest frame a capture holds (all of it).
const snapLen = 65535 + ethHdrLen

// NewPcapWriter creates the capture file for links (name -> kind). The
// interfaces are in the order of the links' names.
func NewPcapWriter(path string, links map[string]tun.Kind) (*PcapWriter, error) {
	names := make([]string, 0, len(links))
	for n := range links {
		names = append(names, n)
	}
	sort.Strings(names)
	p := &PcapWriter{index: map[string]int{}, now: time.Now}
	ifaces := make([]pcapng.Interface, len(names))
	for i, n := range names {
		lt := uint16(LinkTypeRaw)
		if links[n] == tun.KindTAP {
			lt = LinkTypeEthernet
		}
		ifaces[i] = pcapng.Interface{Name: n, LinkType: lt, SnapLen: snapLen}
		p.index[n] = i
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	w, err := pcapng.NewWriter(f, ifaces)
	if err == nil {
		// The header reaches the file at once: a reader started
		// meanwhile sees the interfaces.
		err = w.Flush()
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("pcap: %w", err)
	}
	p.f, p.w = f, w
	return p, nil
}

// Frame implements Capture.
func (p *PcapWriter) Frame(nic string, _ tun.Kind, out bool, frame []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	i, ok := p.index[nic]
	if !ok || p.closed {
		return
	}
	dir := uint32(pcapng.DirInbound)
	if out {
		dir = pcapng.DirOutbound
	}
	// A write error stays in the writer and comes back from Flush.
	_ = p.w.Packet(i, p.now(), dir, frame)
}

// Flush writes what is buffered to the file.
func (p *PcapWriter) Flush() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	return p.w.Flush()
}

// Close flushes and closes the file.
func (p *PcapWriter) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	return errors.Join(p.w.Flush(), p.f.Close())
}
