package pcapng_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunvs/tunvs/internal/pcapng"
	"github.com/tunvs/tunvs/nat/nattest"
)

// TestRoundTrip: interfaces, packets of odd lengths, directions and
// nanosecond times come back as written; tshark (when installed) reads
// the file and shows each packet's interface and direction, tcpdump a
// one-interface file.
func TestRoundTrip(t *testing.T) {
	ifaces := []pcapng.Interface{
		{Name: "tvc", LinkType: pcapng.LinkTypeRaw, SnapLen: 65535},
		{Name: "tap-rs", LinkType: pcapng.LinkTypeEthernet, SnapLen: 65549},
	}
	syn := nattest.TCP(nattest.AP("10.0.0.10:40000"), nattest.AP("172.16.1.100:80"), nattest.SYN, 0)
	udp := nattest.UDP(nattest.AP("10.0.0.10:5000"), nattest.AP("172.16.1.100:53"), []byte("abc"))
	eth := append([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x08, 0x00}, udp...)
	t0 := time.Unix(1767225600, 123456789)
	in := []pcapng.Packet{
		{Iface: 0, Time: t0, Dir: pcapng.DirInbound, Data: syn},
		{Iface: 1, Time: t0.Add(time.Microsecond), Dir: pcapng.DirOutbound, Data: eth},
		{Iface: 0, Time: t0.Add(time.Second), Dir: pcapng.DirOutbound, Data: udp},
	}
	var buf bytes.Buffer
	w, err := pcapng.NewWriter(&buf, ifaces)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range in {
		if err := w.Packet(p.Iface, p.Time, p.Dir, p.Data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Packet(2, t0, 0, syn); err == nil {
		t.Error("a packet of an undescribed interface was written")
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("file length %d is not a multiple of 4", buf.Len())
	}
	gotIf, got, err := pcapng.Read(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if len(gotIf) != 2 || gotIf[0] != ifaces[0] || gotIf[1] != ifaces[1] {
		t.Errorf("interfaces %+v", gotIf)
	}
	if len(got) != len(in) {
		t.Fatalf("%d packets read, %d written", len(got), len(in))
	}
	for i := range in {
		if got[i].Iface != in[i].Iface || !got[i].Time.Equal(in[i].Time) || got[i].Dir != in[i].Dir || !bytes.Equal(got[i].Data, in[i].Data) {
			t.Errorf("packet %d: %+v, wrote %+v", i, got[i], in[i])
		}
	}
	// A file cut in the middle of a block (being written) reads up to it.
	if _, got, err := pcapng.Read(bytes.NewReader(buf.Bytes()[:buf.Len()-10])); err != nil || len(got) != 2 {
		t.Errorf("truncated: %d packets, %v", len(got), err)
	}
	// Garbage is refused, not misread.
	if _, _, err := pcapng.Read(strings.NewReader("\xd4\xc3\xb2\xa1\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00")); err == nil {
		t.Error("a classic pcap header read as pcapng")
	}

	dir := t.TempDir()
	path := filepath.Join(dir, "cap.pcapng")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	// tshark reads interfaces of different link types, and shows each
	// packet's interface name and direction flags.
	if tshark, err := exec.LookPath("tshark"); err != nil {
		t.Log("no tshark to read the file back")
	} else {
		out, err := exec.Command(tshark, "-r", path, "-T", "fields", "-e", "frame.interface_name",
			"-e", "frame.packet_flags_direction", "-e", "ip.src", "-e", "ip.dst", "-e", "frame.time_epoch").Output()
		if err != nil {
			t.Fatalf("tshark -r: %v\n%s", err, out)
		}
		want := "tvc\t0x00000001\t10.0.0.10\t172.16.1.100\t1767225600.123456789\n" +
			"tap-rs\t0x00000002\t10.0.0.10\t172.16.1.100\t1767225600.123457789\n" +
			"tvc\t0x00000002\t10.0.0.10\t172.16.1.100\t1767225601.123456789\n"
		if string(out) != want {
			t.Errorf("tshark -r:\n%s\nwant\n%s", out, want)
		}
	}
	// tcpdump (libpcap 1.10) reads a file of one interface (not several
	// raw-IP ones, nor mixed link types: see netstack.PcapWriter).
	tcpdump, err := exec.LookPath("tcpdump")
	if err != nil {
		t.Log("no tcpdump to read the file back")
		return
	}
	one := filepath.Join(dir, "one.pcapng")
	f, err := os.Create(one)
	if err != nil {
		t.Fatal(err)
	}
	w, err = pcapng.NewWriter(f, ifaces[:1])
	if err != nil {
		t.Fatal(err)
	}
	w.Packet(0, t0, pcapng.DirInbound, syn)
	w.Packet(0, t0, pcapng.DirOutbound, udp)
	if err := errors.Join(w.Flush(), f.Close()); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tcpdump, "-n", "-r", one).CombinedOutput()
	if err != nil {
		t.Fatalf("tcpdump -r: %v\n%s", err, out)
	}
	for _, want := range []string{
		"IP 10.0.0.10.40000 > 172.16.1.100.80: Flags [S]",
		"IP 10.0.0.10.5000 > 172.16.1.100.53: ",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("tcpdump -r lacks %q:\n%s", want, out)
		}
	}
}
