// Package pcapng writes and reads the pcapng capture format
// (draft-ietf-opsawg-pcapng): one file holding several interfaces, each
// with its own name and link type, and a direction for every packet,
// which classic pcap cannot say. tcpdump -r and Wireshark read it.
//
// Only what tunvs writes is supported: little-endian files, one section,
// Interface Description Blocks and Enhanced Packet Blocks.
package pcapng

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// Link types (LINKTYPE_*).
const (
	LinkTypeEthernet = 1   // TAP: Ethernet frames
	LinkTypeRaw      = 101 // TUN: raw IP packets, v4 or v6
)

// Direction of a packet (epb_flags bits 0-1).
const (
	DirUnknown  = 0
	DirInbound  = 1
	DirOutbound = 2
)

// Block types and option codes used here.
const (
	blockSHB = 0x0A0D0D0A
	blockIDB = 0x00000001
	blockEPB = 0x00000006

	byteOrderMagic = 0x1A2B3C4D

	optEnd      = 0
	optIfName   = 2 // IDB: if_name
	optIfTsres  = 9 // IDB: if_tsresol
	optEPBFlags = 2 // EPB: epb_flags
)

// Interface is one link in the file.
type Interface struct {
	Name     string
	LinkType uint16
	SnapLen  uint32
}

// Writer writes one section. It is not safe for concurrent use.
type Writer struct {
	w      *bufio.Writer
	ifaces int
	buf    []byte
}

// NewWriter writes the section header and an Interface Description Block
// per interface, in order (the packets' interface IDs are indexes into
// ifaces). Timestamps are in nanoseconds (if_tsresol 9).
func NewWriter(w io.Writer, ifaces []Interface) (*Writer, error) {
	pw := &Writer{w: bufio.NewWriterSize(w, 1<<16), ifaces: len(ifaces)}
	// Section Header Block: byte-order magic, version 1.0, section
	// length unknown (-1), no options.
	var shb []byte
	shb = binary.LittleEndian.AppendUint32(shb, byteOrderMagic)
	shb = binary.LittleEndian.AppendUint16(shb, 1)
	shb = binary.LittleEndian.AppendUint16(shb, 0)
	shb = binary.LittleEndian.AppendUint64(shb, ^uint64(0))
	pw.block(blockSHB, shb)
	for _, ifc := range ifaces {
		var b []byte
		b = binary.LittleEndian.AppendUint16(b, ifc.LinkType)
		b = binary.LittleEndian.AppendUint16(b, 0)
		b = binary.LittleEndian.AppendUint32(b, ifc.SnapLen)
		b = appendOpt(b, optIfName, []byte(ifc.Name))
		b = appendOpt(b, optIfTsres, []byte{9})
		b = appendOpt(b, optEnd, nil)
		pw.block(blockIDB, b)
	}
	return pw, pw.err()
}

func (pw *Writer) err() error {
	// bufio.Writer keeps its first error; a zero-length write reports it.
	_, err := pw.w.Write(nil)
	return err
}

// appendOpt appends one option, padded to 32 bits.
func appendOpt(b []byte, code uint16, v []byte) []byte {
	b = binary.LittleEndian.AppendUint16(b, code)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
	b = append(b, v...)
	for range (4 - len(v)%4) % 4 {
		b = append(b, 0)
	}
	return b
}

// block writes a block: type, total length, body (padded), total length.
func (pw *Writer) block(typ uint32, body []byte) {
	pad := (4 - len(body)%4) % 4
	total := uint32(12 + len(body) + pad)
	var h [8]byte
	binary.LittleEndian.PutUint32(h[0:], typ)
	binary.LittleEndian.PutUint32(h[4:], total)
	pw.w.Write(h[:])
	pw.w.Write(body)
	pw.w.Write(make([]byte, pad))
	pw.w.Write(h[4:8])
}

// Packet writes an Enhanced Packet Block for interface iface (its index
// in NewWriter's list), with the direction in epb_flags. The packet is
// written whole.
func (pw *Writer) Packet(iface int, ts time.Time, dir uint32, data []byte) error {
	if iface < 0 || iface >= pw.ifaces {
		return fmt.Errorf("pcapng: no interface %d", iface)
	}
	ns := uint64(ts.UnixNano())
	pad := (4 - len(data)%4) % 4
	// 20 bytes of fields, the data, the flags option (8) and the end of
	// options (4).
	bodyLen := 20 + len(data) + pad + 8 + 4
	total := uint32(12 + bodyLen)
	b := pw.buf[:0]
	b = binary.LittleEndian.AppendUint32(b, blockEPB)
	b = binary.LittleEndian.AppendUint32(b, total)
	b = binary.LittleEndian.AppendUint32(b, uint32(iface))
	b = binary.LittleEndian.AppendUint32(b, uint32(ns>>32))
	b = binary.LittleEndian.AppendUint32(b, uint32(ns))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(data)))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(data)))
	pw.buf = b
	pw.w.Write(b)
	pw.w.Write(data)
	b = b[:0]
	for range pad {
		b = append(b, 0)
	}
	b = binary.LittleEndian.AppendUint16(b, optEPBFlags)
	b = binary.LittleEndian.AppendUint16(b, 4)
	b = binary.LittleEndian.AppendUint32(b, dir&3)
	b = binary.LittleEndian.AppendUint32(b, optEnd)
	b = binary.LittleEndian.AppendUint32(b, total)
	pw.buf = b
	_, err := pw.w.Write(b)
	return err
}

// Flush writes what is buffered.
func (pw *Writer) Flush() error { return pw.w.Flush() }

// Packet is one packet read back.
type Packet struct {
	Iface int
	Time  time.Time
	Dir   uint32
	Data  []byte
}

// Read reads a file this package wrote (and simple ones like it): its
// interfaces and packets. A block cut short at the end (a capture being
// written) ends the read without an error.
func Read(r io.Reader) ([]Interface, []Packet, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, nil, err
	}
	var ifaces []Interface
	var pkts []Packet
	le := binary.LittleEndian
	for off := 0; off+12 <= len(b); {
		typ, total := le.Uint32(b[off:]), int(le.Uint32(b[off+4:]))
		if total < 12 || total%4 != 0 {
			return nil, nil, fmt.Errorf("pcapng: block at %d: bad length %d", off, total)
		}
		if off+total > len(b) {
			break
		}
		if le.Uint32(b[off+total-4:]) != uint32(total) {
			return nil, nil, fmt.Errorf("pcapng: block at %d: trailing length differs", off)
		}
		body := b[off+8 : off+total-4]
		switch typ {
		case blockSHB:
			if off == 0 && (len(body) < 16 || le.Uint32(body) != byteOrderMagic) {
				return nil, nil, errors.New("pcapng: not a little-endian section")
			}
		case blockIDB:
			if len(body) < 8 {
				return nil, nil, fmt.Errorf("pcapng: short interface block at %d", off)
			}
			ifc := Interface{LinkType: le.Uint16(body), SnapLen: le.Uint32(body[4:])}
			if v, ok := option(body[8:], optIfName); ok {
				ifc.Name = string(v)
			}
			ifaces = append(ifaces, ifc)
		case blockEPB:
			if len(body) < 20 {
				return nil, nil, fmt.Errorf("pcapng: short packet block at %d", off)
			}
			capLen := int(le.Uint32(body[12:]))
			if 20+capLen > len(body) {
				return nil, nil, fmt.Errorf("pcapng: packet block at %d: captured length %d", off, capLen)
			}
			ns := uint64(le.Uint32(body[4:]))<<32 | uint64(le.Uint32(body[8:]))
			p := Packet{Iface: int(le.Uint32(body)), Time: time.Unix(0, int64(ns)), Data: body[20 : 20+capLen]}
			if p.Iface >= len(ifaces) {
				return nil, nil, fmt.Errorf("pcapng: packet block at %d: interface %d not described", off, p.Iface)
			}
			if v, ok := option(body[20+(capLen+3)/4*4:], optEPBFlags); ok && len(v) == 4 {
				p.Dir = le.Uint32(v) & 3
			}
			pkts = append(pkts, p)
		}
		off += total
	}
	return ifaces, pkts, nil
}

// option finds an option's value in an options area.
func option(b []byte, code uint16) ([]byte, bool) {
	le := binary.LittleEndian
	for len(b) >= 4 {
		c, n := le.Uint16(b), int(le.Uint16(b[2:]))
		if c == optEnd || 4+n > len(b) {
			return nil, false
		}
		if c == code {
			return b[4 : 4+n], true
		}
		b = b[4+(n+3)/4*4:]
	}
	return nil, false
}
