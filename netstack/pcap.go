package netstack

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tunvs/tunvs/tun"
)

// pcap link types.
const (
	LinkTypeEthernet = 1   // TAP: Ethernet frames
	LinkTypeRaw      = 101 // TUN: raw IP packets, v4 or v6
)

// PcapWriter is a Capture that writes classic libpcap files, which
// tcpdump -r and Wireshark read. A pcap file has one link type, so:
// when every link is of one kind (all TUN, or all TAP), everything goes to
// one file, PATH, with LINKTYPE_RAW (101) or LINKTYPE_ETHERNET (1); when
// both kinds exist, each link gets its own file, PATH with the link's name
// inserted before the extension (cap.pcap -> cap.tvc.pcap). Both
// directions of every link are written; classic pcap has no direction
// field.
type PcapWriter struct {
	mu     sync.Mutex
	files  map[string]*pcapFile // by link name
	all    []*pcapFile
	closed bool
	now    func() time.Time
}

type pcapFile struct {
	f *os.File
	w *bufio.Writer
}

// snapLen is the largest frame a capture holds (all of it).
const snapLen = 65535 + ethHdrLen

// NewPcapWriter creates the capture file(s) for links (name -> kind).
func NewPcapWriter(path string, links map[string]tun.Kind) (*PcapWriter, error) {
	p := &PcapWriter{files: map[string]*pcapFile{}, now: time.Now}
	kinds := map[tun.Kind]bool{}
	for _, k := range links {
		kinds[k] = true
	}
	open := func(path string, lt uint32) (*pcapFile, error) {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			return nil, err
		}
		pf := &pcapFile{f: f, w: bufio.NewWriterSize(f, 1<<16)}
		var h [24]byte
		binary.LittleEndian.PutUint32(h[0:], 0xa1b2c3d4) // microsecond timestamps
		binary.LittleEndian.PutUint16(h[4:], 2)
		binary.LittleEndian.PutUint16(h[6:], 4)
		binary.LittleEndian.PutUint32(h[16:], snapLen)
		binary.LittleEndian.PutUint32(h[20:], lt)
		if _, err := pf.w.Write(h[:]); err != nil {
			f.Close()
			return nil, err
		}
		p.all = append(p.all, pf)
		return pf, nil
	}
	lt := func(k tun.Kind) uint32 {
		if k == tun.KindTAP {
			return LinkTypeEthernet
		}
		return LinkTypeRaw
	}
	if len(kinds) <= 1 {
		var k tun.Kind = tun.KindTUN
		for kk := range kinds {
			k = kk
		}
		pf, err := open(path, lt(k))
		if err != nil {
			return nil, err
		}
		for name := range links {
			p.files[name] = pf
		}
		return p, nil
	}
	for name, k := range links {
		pf, err := open(PerLinkPath(path, name), lt(k))
		if err != nil {
			p.Close()
			return nil, err
		}
		p.files[name] = pf
	}
	return p, nil
}

// PerLinkPath is the file a link's capture goes to when links of both
// kinds exist.
func PerLinkPath(path, link string) string {
	ext := filepath.Ext(path)
	return strings.TrimSuffix(path, ext) + "." + link + ext
}

// Frame implements Capture.
func (p *PcapWriter) Frame(nic string, _ tun.Kind, _ bool, frame []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pf := p.files[nic]
	if pf == nil || p.closed {
		return
	}
	ts := p.now()
	var h [16]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(ts.Unix()))
	binary.LittleEndian.PutUint32(h[4:], uint32(ts.Nanosecond()/1000))
	binary.LittleEndian.PutUint32(h[8:], uint32(len(frame)))
	binary.LittleEndian.PutUint32(h[12:], uint32(len(frame)))
	pf.w.Write(h[:])
	pf.w.Write(frame)
}

// Flush writes what is buffered to the files.
func (p *PcapWriter) Flush() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for _, pf := range p.all {
		errs = append(errs, pf.w.Flush())
	}
	return errors.Join(errs...)
}

// Close flushes and closes the files.
func (p *PcapWriter) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	var errs []error
	for _, pf := range p.all {
		if err := pf.w.Flush(); err != nil {
			errs = append(errs, err)
		}
		if err := pf.f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("pcap: %w", err))
		}
	}
	return errors.Join(errs...)
}
