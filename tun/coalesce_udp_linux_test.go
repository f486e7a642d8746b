//go:build linux

package tun

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestWriteUSOKernel writes a batch of small datagrams of one flow to a
// real offload device: where the kernel takes USO they go in one write(2)
// as one super-packet, and the kernel's socket receives every datagram,
// in order, with its payload.
func TestWriteUSOKernel(t *testing.T) {
	if !inSandbox(t) {
		return
	}
	// The datagrams go from 10.77.0.1:5000 to 10.77.0.2:9 (pktSpec).
	od, conn := udpSink(t, "tvuso0")
	pkts := datagrams(false, 20, 64, 30)
	before := od.Stats()
	if _, err := od.WriteGSO(withOffset(pkts, 16), make([]GSO, len(pkts)), 16); err != nil {
		t.Fatal(err)
	}
	after := od.Stats()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 2000)
	for i, p := range pkts {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if from != netip.MustParseAddrPort("10.77.0.1:5000") || !bytes.Equal(buf[:n], p[28:]) {
			t.Fatalf("datagram %d from %v: % x, want % x", i, from, buf[:n], p[28:])
		}
	}
	syscalls := after.WriteSyscalls - before.WriteSyscalls
	t.Logf("USO %v: %d datagrams in %d write(2), %d super-packets", after.USO, len(pkts), syscalls, after.GSOWrites-before.GSOWrites)
	if after.USO && (syscalls != 1 || after.GSOWrites-before.GSOWrites != 1) {
		t.Errorf("USO on: %d write(2) and %d super-packets for one flow's %d datagrams, want 1 and 1",
			syscalls, after.GSOWrites-before.GSOWrites, len(pkts))
	}
}

// udpSink opens offload device name, up, with 10.77.0.2/24, and listens
// on 10.77.0.2:9, where the datagrams pktSpec builds go; both are closed
// when t ends.
func udpSink(t *testing.T, name string) (*OffloadDevice, *net.UDPConn) {
	t.Helper()
	d := openOrSkip(t, Config{Name: name, MTU: 1500, Up: true, Offload: true})
	od, ok := d.(*OffloadDevice)
	if !ok {
		t.Fatalf("Open returned %T", d)
	}
	setAddr(t, d.Name(), netip.MustParsePrefix("10.77.0.2/24"))
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 77, 0, 2), Port: 9})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return od, conn
}
