//go:build linux

package tun

import (
	"testing"
	"time"
)

// TestGroupedWriteUSOKernel writes the datagrams of two flows, interleaved
// as a one-armed director reads them, grouped (FlowOrder) to a real
// offload device: where the kernel takes USO, one write(2) a flow; and the
// kernel's socket receives every datagram of each flow in order.
// Ungrouped, the same batch takes a write(2) a datagram.
func TestGroupedWriteUSOKernel(t *testing.T) {
	if !inSandbox(t) {
		return
	}
	// The datagrams go from 10.77.0.1:5000 and :5001 to 10.77.0.2:9.
	od, conn := udpSink(t, "tvgrp0")
	bufs := interleaved(2, 20)
	gso := make([]GSO, len(bufs))
	var o FlowOrder
	for _, grouped := range []bool{true, false} {
		out, outGSO := bufs, gso
		if grouped {
			out, outGSO = o.Group(bufs, gso, 16, 0)
		}
		before := od.Stats()
		if _, err := od.WriteGSO(out, outGSO, 16); err != nil {
			t.Fatal(err)
		}
		after := od.Stats()
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 2000)
		next := [2]int{}
		for range len(bufs) {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("grouped %v: after %v datagrams: %v", grouped, next, err)
			}
			f := int(from.Port()) - 5000
			if n != 4 || f < 0 || f > 1 || int(buf[0]) != f || int(buf[1]) != next[f] {
				t.Fatalf("grouped %v: datagram % x from %v, want flow %d's number %d", grouped, buf[:n], from, f, next[f])
			}
			next[f]++
		}
		syscalls := after.WriteSyscalls - before.WriteSyscalls
		t.Logf("grouped %v, USO %v: %d datagrams of 2 flows in %d write(2)", grouped, after.USO, len(bufs), syscalls)
		switch {
		case !after.USO:
		case grouped && syscalls != 2:
			t.Errorf("grouped: %d write(2) for two flows, want 2", syscalls)
		case !grouped && syscalls != uint64(len(bufs)):
			t.Errorf("interleaved: %d write(2), want %d (one a datagram)", syscalls, len(bufs))
		}
	}
}
