//go:build linux

package e2e

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tunvs/tunvs/nat/nattest"
)

// malformedKinds builds one packet of each kind of damage the storm sends
// to the VIP (or from a source no host may use), IPv4 and IPv6. Each is
// what the kernel drops before IPVS sees it, or what IPVS itself refuses.
func malformedKinds() map[string][]byte {
	v4, v6 := netip.AddrPortFrom(vip4, 80), netip.AddrPortFrom(vip6, 80)
	c4, c6 := netip.AddrPortFrom(cip4, 40000), netip.AddrPortFrom(cip6, 40000)
	syn4 := func() []byte { return nattest.TCP(c4, v4, nattest.SYN, 0) }
	syn6 := func() []byte { return nattest.TCP(c6, v6, nattest.SYN, 0) }
	fix4 := func(b []byte) []byte {
		b[10], b[11] = 0, 0
		ihl := int(b[0]&0xf) * 4
		if ihl >= 20 && ihl <= len(b) {
			var s uint32
			for i := 0; i < ihl; i += 2 {
				s += uint32(binary.BigEndian.Uint16(b[i:]))
			}
			for s > 0xffff {
				s = s>>16 + s&0xffff
			}
			binary.BigEndian.PutUint16(b[10:], ^uint16(s))
		}
		return b
	}
	k := map[string][]byte{}
	k["v4_truncated_header"] = syn4()[:12]
	k["bad_version"] = func() []byte { b := syn4(); b[0] = 0x75; return b }()
	k["v4_ihl_below_5"] = fix4(func() []byte { b := syn4(); b[0] = 0x43; return b }())
	k["v4_ihl_past_end"] = func() []byte { b := syn4(); b[0] = 0x4f; return b[:40] }()
	k["v4_total_length_past_end"] = fix4(func() []byte { b := syn4(); binary.BigEndian.PutUint16(b[2:], 1400); return b }())
	k["v4_total_length_below_ihl"] = fix4(func() []byte { b := syn4(); binary.BigEndian.PutUint16(b[2:], 12); return b }())
	k["v4_bad_header_checksum"] = func() []byte { b := syn4(); b[10] ^= 0x55; return b }()
	k["tcp_doff_below_5"] = func() []byte { b := syn4(); b[32] = 0x30; return b }()
	k["tcp_doff_past_end"] = func() []byte { b := syn4(); b[32] = 0xf0; return b }()
	k["tcp_truncated"] = fix4(func() []byte {
		b := syn4()[:32]
		binary.BigEndian.PutUint16(b[2:], 32)
		return b
	}())
	k["tcp_bad_checksum"] = func() []byte { b := syn4(); b[36] ^= 0x55; return b }()
	k["udp_length_below_8"] = func() []byte {
		b := nattest.UDP(c4, netip.AddrPortFrom(vip4, 53), []byte("x"))
		binary.BigEndian.PutUint16(b[24:], 4)
		return b
	}()
	k["udp_length_past_end"] = func() []byte {
		b := nattest.UDP(c4, netip.AddrPortFrom(vip4, 53), []byte("x"))
		binary.BigEndian.PutUint16(b[24:], 600)
		return b
	}()
	k["v4_first_fragment"] = fix4(func() []byte { b := syn4(); b[6] = 0x20; return b }())
	k["v4_later_fragment"] = fix4(func() []byte { b := syn4(); b[6], b[7] = 0x00, 0x10; return b }())
	for name, src := range map[string]string{"martian_loopback": "127.0.0.1", "martian_zero": "0.0.0.0",
		"martian_multicast": "224.0.0.1", "martian_broadcast": "255.255.255.255", "martian_class_e": "240.0.0.1", "own_source_vip": vip4.String()} {
		k[name] = nattest.TCP(netip.AddrPortFrom(netip.MustParseAddr(src), 1234), v4, nattest.SYN, 0)
	}
	k["syn_fin_rst"] = nattest.TCP(c4, v4, nattest.SYN|nattest.FIN|nattest.RST, 0)
	k["ack_bad_cookie"] = nattest.Build(nattest.Seg{Src: c4, Dst: v4, Proto: 6, Flags: nattest.ACK, Seq: 1, Ack: 12345})
	k["ttl_1"] = nattest.Build(nattest.Seg{Src: c4, Dst: v4, Proto: 6, Flags: nattest.SYN, TTL: 1})
	k["icmp_error_short_quote"] = fix4(func() []byte {
		b := make([]byte, 20+8+10)
		b[0], b[8], b[9] = 0x45, 64, 1
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		copy(b[12:16], cip4.AsSlice())
		copy(b[16:20], vip4.AsSlice())
		b[20] = 3 // unreachable, quoting 10 bytes of an IP header
		b[28] = 0x45
		return b
	}())
	k["v6_truncated_header"] = syn6()[:30]
	k["v6_payload_length_past_end"] = func() []byte { b := syn6(); binary.BigEndian.PutUint16(b[4:], 900); return b }()
	k["v6_tcp_bad_checksum"] = func() []byte { b := syn6(); b[56] ^= 0x55; return b }()
	k["v6_routing_header_type0"] = func() []byte {
		b := syn6()
		rh := []byte{6, 2, 0, 1, 0, 0, 0, 0}
		rh = append(rh, vip6.AsSlice()...)
		out := append(append(append([]byte{}, b[:40]...), rh...), b[40:]...)
		out[6] = 43
		binary.BigEndian.PutUint16(out[4:], uint16(len(out)-40))
		return out
	}()
	k["v6_bad_extension_length"] = func() []byte {
		b := syn6()
		out := append(append(append([]byte{}, b[:40]...), 6, 200, 0, 0, 0, 0, 0, 0), b[40:]...)
		out[6] = 60
		binary.BigEndian.PutUint16(out[4:], uint16(len(out)-40))
		return out
	}()
	k["v6_fragment"] = func() []byte {
		b := syn6()
		out := append(append(append([]byte{}, b[:40]...), 6, 0, 0, 1, 0, 0, 0, 7), b[40:]...)
		out[6] = 44
		binary.BigEndian.PutUint16(out[4:], uint16(len(out)-40))
		return out
	}()
	k["v6_martian_loopback"] = nattest.TCP(netip.AddrPortFrom(netip.IPv6Loopback(), 1234), v6, nattest.SYN, 0)
	k["v6_martian_multicast"] = nattest.TCP(netip.AddrPortFrom(netip.MustParseAddr("ff02::1"), 1234), v6, nattest.SYN, 0)
	k["v6_mapped_source"] = nattest.TCP(netip.AddrPortFrom(netip.MustParseAddr("::ffff:10.0.0.2"), 1234), v6, nattest.SYN, 0)
	k["random_bytes"] = func() []byte {
		b := make([]byte, 60)
		for i := range b {
			b[i] = byte(rand.Uint32())
		}
		b[0] = 0x45
		return b
	}()
	return k
}

// A storm of malformed packets of every kind above, written straight onto
// the client's link (a packet socket on its TUN device, so that nothing
// is fixed on the way), while clients make new connections and a
// keep-alive connection goes on, and the control socket is asked every
// 200 ms. Figures are printed; the targets: every legitimate request
// answered (at least 99%), the control socket answering throughout, and
// the drops counted by reason.
func TestMalformedStorm(t *testing.T) {
	if os.Getenv(envReliability) == "" {
		t.Skip("set " + envReliability + "=1 (make reliability)")
	}
	inSandboxes(t, runMalformedStorm)
}

func runMalformedStorm(t *testing.T) {
	const (
		rate     = 20000
		stormFor = 10 * time.Second
	)
	e := setup(t, opts{extra: []string{"--metrics=127.0.0.1:0"}})
	kinds := malformedKinds()
	names := make([]string, 0, len(kinds))
	pkts := make([][]byte, 0, len(kinds))
	for n, b := range kinds {
		names = append(names, n)
		pkts = append(pkts, b)
	}
	before := e.metrics()
	ctx, cancel := context.WithTimeout(context.Background(), stormFor)
	defer cancel()
	var wg sync.WaitGroup
	var sent atomic.Int64
	var stormErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		stormErr = e.client.Do(func() error {
			ifi, err := net.InterfaceByName("tvc")
			if err != nil {
				return err
			}
			fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_DGRAM, 0)
			if err != nil {
				return err
			}
			defer syscall.Close(fd)
			start := time.Now()
			for i := 0; ctx.Err() == nil; i++ {
				p := pkts[i%len(pkts)]
				proto := uint16(0x0800)
				if len(p) > 0 && p[0]>>4 == 6 {
					proto = 0x86dd
				}
				sa := &syscall.SockaddrLinklayer{Protocol: proto>>8 | proto<<8, Ifindex: ifi.Index}
				if err := syscall.Sendto(fd, p, 0, sa); err != nil && err != syscall.ENOBUFS {
					return fmt.Errorf("%s: %w", names[i%len(pkts)], err)
				}
				n := sent.Add(1)
				if ahead := time.Duration(n)*time.Second/rate - time.Since(start); ahead > time.Millisecond {
					time.Sleep(ahead)
				}
			}
			return nil
		})
	}()
	c := e.httpClient()
	var newOK, newFail, ctlOK, ctlFail, estOK, estFail atomic.Int64
	keep := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxConnsPerHost: 1,
		DialContext: c.Transport.(*http.Transport).DialContext}}
	until(ctx, &wg, 0, &newOK, &newFail, func() bool { return fetched(c, "http://172.16.1.100/") })
	until(ctx, &wg, 50*time.Millisecond, &estOK, &estFail, func() bool { return fetched(keep, "http://172.16.1.100/") })
	until(ctx, &wg, 200*time.Millisecond, &ctlOK, &ctlFail, func() bool { return e.admOK("-L", "-n") })
	wg.Wait()
	if stormErr != nil {
		t.Fatalf("storm: %v", stormErr)
	}
	after := e.metrics()
	var drops []string
	var counted uint64
	for _, l := range strings.Split(after, "\n") {
		name, v, ok := strings.Cut(l, " ")
		if !ok || !strings.HasPrefix(name, "tunvs_drops_total{") {
			continue
		}
		var n, was uint64
		fmt.Sscan(v, &n)
		for _, b := range strings.Split(before, "\n") {
			if bn, bv, ok := strings.Cut(b, " "); ok && bn == name {
				fmt.Sscan(bv, &was)
			}
		}
		if n > was {
			drops = append(drops, fmt.Sprintf("%s=%d", strings.TrimSuffix(strings.TrimPrefix(name, `tunvs_drops_total{reason="`), `"}`), n-was))
			counted += n - was
		}
	}
	total := newOK.Load() + newFail.Load()
	pct := 100 * float64(newOK.Load()) / float64(max(total, 1))
	t.Logf("FIGURES kinds=%d sent=%d (%.0f/s) new_ok=%d/%d (%.2f%%) keepalive ok=%d fail=%d control ok=%d fail=%d nat_drops=%d by reason: %s",
		len(kinds), sent.Load(), float64(sent.Load())/stormFor.Seconds(), newOK.Load(), total, pct,
		estOK.Load(), estFail.Load(), ctlOK.Load(), ctlFail.Load(), counted, strings.Join(drops, " "))
	if pct < 99 || estFail.Load() != 0 {
		t.Errorf("legitimate traffic suffered: %.2f%% of new connections, %d keep-alive failures", pct, estFail.Load())
	}
	if ctlFail.Load() != 0 || ctlOK.Load() == 0 {
		t.Errorf("the control socket failed %d times (answered %d)", ctlFail.Load(), ctlOK.Load())
	}
	if counted == 0 {
		t.Error("no drop counted")
	}
	if e.daemon.ProcessState != nil {
		t.Fatalf("the director exited:\n%s", e.log)
	}
}

// admOK runs tunvsadm and reports whether it answered (in 5 s).
func (e *env) admOK(args ...string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return execCommand(ctx, bin("tunvsadm"), append([]string{"--socket", e.sock}, args...)...).Run() == nil
}

var execCommand = exec.CommandContext

// until runs f in a goroutine of wg, every `every`, until ctx ends, and
// counts what it reports in ok or fail.
func until(ctx context.Context, wg *sync.WaitGroup, every time.Duration, ok, fail *atomic.Int64, f func() bool) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if f() {
				ok.Add(1)
			} else {
				fail.Add(1)
			}
			if every > 0 {
				time.Sleep(every)
			}
		}
	}()
}

// fetched GETs url and reads the answer whole: whether that worked.
func fetched(c *http.Client, url string) bool {
	resp, err := c.Get(url)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return err == nil
}
