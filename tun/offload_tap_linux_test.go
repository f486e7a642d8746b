//go:build linux

package tun

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"
)

// eth puts an Ethernet header (dst, src, type) in front of p.
func eth(dst, src byte, typ uint16, p []byte) []byte {
	f := []byte{2, 0, 0, 0, 0, dst, 2, 0, 0, 0, 0, src, byte(typ >> 8), byte(typ)}
	return append(f, p...)
}

// TestOffloadTAPFrames runs a TAP offload queue over a fake fd: Write
// coalesces a run of TCP frames into one super-frame only while their
// Ethernet headers agree, with the virtio offsets counting from the
// frame; Read splits a super-frame back into frames that each carry its
// Ethernet header; ReadGSO hands a super-frame up whole with offsets from
// the IP header, an ARP frame as it is, and drops a super-frame that is
// not IP.
func TestOffloadTAPFrames(t *testing.T) {
	q, peer := fakeQueue(t)
	q.kind = KindTAP
	segs := segments(false, 10, 1400, 1400)
	var frames [][]byte
	for i, s := range segs {
		src := byte(1)
		if i >= 6 {
			src = 9 // another sender: a run must not cross it
		}
		frames = append(frames, eth(5, src, etherTypeIPv4, s))
	}
	if n, err := q.Write(withOffset(frames, 16), 16); err != nil || n != len(frames) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	rbuf := make([]byte, readBufSize+ethHdrLen)
	var written [][]byte
	for i, want := range []int{6, 4} {
		m, err := unix.Read(peer, rbuf)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		var h virtioHdr
		h.decode(rbuf)
		if h.gsoType != vnetGSOTCPv4 || h.csumStart != ethHdrLen+20 || h.hdrLen != ethHdrLen+52 || int(h.gsoSize) != 1400 {
			t.Fatalf("super-frame %d: virtio header %+v", i, h)
		}
		f := rbuf[virtioNetHdrLen:m]
		if !bytes.Equal(f[:ethHdrLen], frames[6*i][:ethHdrLen]) || len(f) != ethHdrLen+52+want*1400 {
			t.Fatalf("super-frame %d: %d bytes behind % x", i, len(f), f[:ethHdrLen])
		}
		written = append(written, append([]byte(nil), rbuf[:m]...))
	}

	// What was written, read back: the frames again, one by one.
	for _, w := range written {
		if _, err := unix.Write(peer, w); err != nil {
			t.Fatal(err)
		}
	}
	bufs, sizes := makeBufs(16, 1600)
	var got [][]byte
	for len(got) < len(frames) {
		n, err := q.Read(bufs, sizes, 4)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			got = append(got, append([]byte(nil), bufs[i][4:4+sizes[i]]...))
		}
	}
	for i := range frames {
		if !bytes.Equal(got[i], frames[i]) {
			t.Fatalf("frame %d read back differs:\n got % x\nwant % x", i, got[i][:60], frames[i][:60])
		}
	}

	// ReadGSO: a super-frame, an ARP frame, a super-frame of ARP.
	arp := eth(0xff, 7, 0x0806, make([]byte, 28))
	bogus := append(append([]byte(nil), written[1][:virtioNetHdrLen]...), arp...)
	for _, w := range [][]byte{written[0], append(make([]byte, virtioNetHdrLen), arp...), bogus} {
		if _, err := unix.Write(peer, w); err != nil {
			t.Fatal(err)
		}
	}
	arena := make([]byte, 256<<10)
	pkts := make([]GSOPacket, 8)
	var all []GSOPacket
	for len(all) < 2 {
		n, err := q.ReadGSO(arena, 16, pkts)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, pkts[:n]...)
	}
	sp := all[0]
	if sp.GSO.Type != GSOTCPv4 || !sp.GSO.NeedsCsum || sp.GSO.CsumStart != 20 || sp.GSO.CsumOffset != 16 || sp.GSO.HdrLen != 52 || sp.GSO.Size != 1400 {
		t.Fatalf("super-frame's offload state %+v, want offsets from the IP header", sp.GSO)
	}
	f := arena[sp.Off : sp.Off+sp.Len]
	if !bytes.Equal(f, written[0][virtioNetHdrLen:]) || !sp.GSO.InPlace(f[ethHdrLen:]) {
		t.Fatalf("super-frame handed up as %d bytes % x", len(f), f[:ethHdrLen])
	}
	if a := all[1]; a.GSO.Pending() || !bytes.Equal(arena[a.Off:a.Off+a.Len], arp) {
		t.Fatalf("ARP frame handed up as %+v", a)
	}
	if len(all) != 2 || q.c.readDrops.Load() != 1 {
		t.Fatalf("%d packets, %d drops: want the super-frame of ARP dropped", len(all), q.c.readDrops.Load())
	}
}
