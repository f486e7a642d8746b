//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tunvs/tunvs/internal/netns"
	"github.com/tunvs/tunvs/internal/pcapng"
)

// admIn runs tunvsadm with stdin, returning its output and exit status.
func (e *env) admIn(stdin string, args ...string) (string, int) {
	e.t.Helper()
	return admAt(e.t, e.sock, stdin, args...)
}

func admAt(t *testing.T, sock, stdin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(bin("tunvsadm"), append([]string{"--socket", sock}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("tunvsadm %v: %v", args, err)
	return "", -1
}

// slowGet starts GET /big on a client socket with a small receive buffer,
// so that the transfer lasts as long as the reader makes it last.
func (e *env) slowGet(addr string) net.Conn {
	e.t.Helper()
	var c net.Conn
	err := e.client.Do(func() (err error) {
		d := net.Dialer{Timeout: 10 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 8192)
			})
			return serr
		}}
		c, err = d.Dial("tcp4", addr)
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := io.WriteString(c, "GET /big HTTP/1.0\r\nHost: vip\r\n\r\n"); err != nil {
		e.t.Fatal(err)
	}
	return c
}

func runAdmin(t *testing.T) {
	e := setup(t, opts{})
	const svc = "172.16.1.100:8082"

	// A service and its servers, with tunvsadm only.
	e.adm("-A", "-t", svc, "-s", "rr")
	e.adm("--add-server", "--tcp-service", svc, "--real-server", "172.16.1.5:8080", "--masquerading", "--weight=1")
	e.adm("-a", "-t", svc, "-r", "172.16.1.6:8080", "-m", "-w", "2")
	want := "Prot LocalAddress:Port Scheduler Flags\n" +
		"  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n" +
		"TCP  172.16.1.100:8082 rr\n" +
		"  -> 172.16.1.5:8080              Masq    1      0          0         \n" +
		"  -> 172.16.1.6:8080              Masq    2      0          0         \n"
	if got := e.adm("-L", "-n", "-t", svc); got != want {
		t.Errorf("-L -n -t:\n%q\nwant\n%q", got, want)
	}
	// Edit a weight.
	e.adm("-e", "-t", svc, "-r", "172.16.1.6:8080", "-m", "-w", "3")
	if got := e.adm("-Ln", "-t", svc); !strings.Contains(got, "  -> 172.16.1.6:8080              Masq    3      ") {
		t.Errorf("weight not edited:\n%s", got)
	}
	// Errors as ipvsadm's, with its exit status.
	if out, code := e.admIn("", "-a", "-t", svc, "-r", "172.16.1.6:8080", "-m"); code != 255 || out != "Destination already exists\n" {
		t.Errorf("duplicate server: exit %d %q", code, out)
	}
	if out, code := e.admIn("", "-d", "-t", "172.16.1.100:9999", "-r", "172.16.1.6:8080"); code != 255 || out != "Service not defined\n" {
		t.Errorf("unknown service: exit %d %q", code, out)
	}
	// Direct routing needs the real server on a TAP link's segment; this
	// one is behind a TUN link, so the daemon refuses it as the kernel
	// refuses a destination it cannot use (exit 255, nothing changed).
	if out, code := e.admIn("", "-a", "-t", svc, "-r", "172.16.1.6:8080", "-g"); code != 255 || !strings.Contains(out, "needs the real server on the segment of a TAP link") {
		t.Errorf("-g: exit %d %q", code, out)
	}

	// A long download through the service, read slowly. Halfway, the
	// server that carries it is quiesced (weight 0) and the other server
	// is deleted; the download ends unharmed. (Deleting the very server
	// that carries a flow stalls it, as in the kernel: ip_vs_in drops the
	// client's packets of a connection whose server is no longer
	// available, with expire_nodest_conn=0 or 1 alike.)
	c := e.slowGet(svc)
	defer c.Close()
	var body bytes.Buffer
	buf := make([]byte, 4096)
	readSome := func(n int) {
		for range n {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			k, err := c.Read(buf)
			body.Write(buf[:k])
			if err != nil {
				if err != io.EOF {
					t.Fatalf("download: %v after %d bytes", err, body.Len())
				}
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	readSome(20)
	conns := e.adm("-L", "-n", "-c")
	var rs string
	for _, l := range strings.Split(conns, "\n") {
		f := strings.Fields(l)
		if len(f) == 6 && f[4] == svc && f[2] == "ESTABLISHED" {
			rs = f[5]
		}
	}
	if rs == "" {
		t.Fatalf("the download's connection is not listed:\n%s", conns)
	}
	other := "172.16.1.5:8080"
	if rs == other {
		other = "172.16.1.6:8080"
	}
	e.adm("-e", "-t", svc, "-r", rs, "-m", "-w", "0")
	e.adm("-d", "-t", svc, "-r", other)
	got := e.adm("-L", "-n", "-t", svc)
	if strings.Contains(got, other) || !strings.Contains(got, fmt.Sprintf("  -> %-28s Masq    0      1          0", rs)) {
		t.Errorf("after -e -w 0 and -d:\n%s", got)
	}
	if body.Len() >= 1<<20 {
		t.Fatalf("the download ended before the server was deleted (%d bytes)", body.Len())
	}
	readSome(1 << 20)
	_, hdr, _ := bytes.Cut(body.Bytes(), []byte("\r\n\r\n"))
	if len(hdr) != 1<<20 || !bytes.Equal(hdr[:16], []byte("0123456789abcdef")) || !bytes.Equal(hdr[len(hdr)-16:], []byte("0123456789abcdef")) {
		t.Errorf("download after deleting its server: %d body bytes, want %d", len(hdr), 1<<20)
	}
	c.Close()

	// --stats, then -Z zeroes the counters.
	stats := e.adm("-L", "-n", "--stats", "--exact", "-t", svc)
	if strings.Contains(stats, fmt.Sprintf("%-33s%9d ", "TCP  172.16.1.100:8082", 0)) {
		t.Errorf("no traffic counted:\n%s", stats)
	}
	e.adm("-Z")
	zero := e.adm("-L", "-n", "--stats", "-t", "172.16.1.100:80")
	if !strings.Contains(zero, fmt.Sprintf("%-33s%9d%9d%9d%9d%9d\n", "TCP  172.16.1.100:80", 0, 0, 0, 0, 0)) {
		t.Errorf("-Z left counters:\n%s", zero)
	}
	if r := e.adm("-L", "-n", "--rate"); !strings.Contains(r, "CPS    InPPS   OutPPS    InBPS   OutBPS") {
		t.Errorf("--rate:\n%s", r)
	}
	if to := e.adm("-L", "--timeout"); to != "Timeout (tcp tcpfin udp): 10 2 3\n" {
		t.Errorf("--timeout: %q", to)
	}

	// -S, -C, -R: the same table again.
	saved := e.adm("-S", "-n")
	if !strings.Contains(saved, "-A -t 172.16.1.100:8082 -s rr\n") {
		t.Errorf("-S:\n%s", saved)
	}
	e.adm("-C")
	if got := e.adm("-L", "-n"); strings.Count(got, "\n") != 3 {
		t.Errorf("-C left services:\n%s", got)
	}
	if out, code := e.admIn(saved, "-R"); code != 0 {
		t.Fatalf("-R: exit %d %s", code, out)
	}
	if again := e.adm("-S", "-n"); again != saved {
		t.Errorf("-R restored\n%s\nsaved\n%s", again, saved)
	}
	// The restored table serves.
	if got := get(t, e.httpClient(), "http://172.16.1.100/"); got != "RS1" && got != "RS2" {
		t.Errorf("after -R: %q", got)
	}
	// A batch with a bad command changes nothing.
	if out, code := e.admIn(saved+"-a -t 172.16.1.100:8082 -r 172.16.1.9:8080 -m -w 99999\n", "-R"); code != 2 || !strings.Contains(out, "illegal weight specified") {
		t.Errorf("bad -R: exit %d %q", code, out)
	}
	if again := e.adm("-S", "-n"); again != saved {
		t.Errorf("a refused -R changed the table:\n%s", again)
	}

}

// A user other than the daemon's cannot use its control socket. The
// sandboxes map no second user, so this runs as real root: the daemon in a
// network namespace of its own (unshare --net; the control socket is a
// file, reachable from any namespace), tunvsadm as uid 65534 (setpriv).
func TestAdminNonOwner(t *testing.T) {
	if netns.Inside() || os.Geteuid() != 0 {
		t.Skip("needs real root, outside the sandbox")
	}
	unshare, err1 := exec.LookPath("unshare")
	setpriv, err2 := exec.LookPath("setpriv")
	if err1 != nil || err2 != nil {
		netns.Unavailable(t, "needs unshare and setpriv (util-linux)")
	}
	dir, err := os.MkdirTemp("", "tunvs-e2e-owner-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	// Anyone may enter the directory: only the socket itself (mode
	// 0600, the peer-credentials check) keeps the other user out.
	os.Chmod(dir, 0o755)
	sock := filepath.Join(dir, "ctl.sock")
	var log lockedBuffer
	d := exec.Command(unshare, "--net", "--", bin("tunvs"), "run", "--socket", sock,
		"--link=name=tvo,addr=10.9.0.1/24", "--rule", "-A -t 10.9.0.1:80 -s rr")
	d.Stdout, d.Stderr = &log, &log
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		d.Process.Signal(os.Interrupt)
		d.Wait()
		if t.Failed() {
			t.Logf("daemon log:\n%s", log.String())
		}
	}()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if out, code := admAt(t, sock, "", "-L", "-n"); code == 0 && strings.Contains(out, "TCP  10.9.0.1:80 rr") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("daemon not up")
		}
		time.Sleep(50 * time.Millisecond)
	}
	out, err := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
		bin("tunvsadm"), "--socket", sock, "-L", "-n").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "permission denied") || strings.Contains(string(out), "10.9.0.1") {
		t.Errorf("uid 65534 used the control socket: %v\n%s", err, out)
	}
	// Even with the socket's mode loosened, the credentials check holds.
	os.Chmod(sock, 0o666)
	out, err = exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
		bin("tunvsadm"), "--socket", sock, "-L", "-n").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "permission denied") || strings.Contains(string(out), "10.9.0.1") {
		t.Errorf("uid 65534 used a 0666 control socket: %v\n%s", err, out)
	}
}

// The rules file: a bad line at start is named and nothing starts; SIGHUP
// applies only the difference; a bad file on SIGHUP changes nothing and
// the log says why.
func runRulesFile(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "ctl.sock")
	rules := filepath.Join(dir, "rules")
	write := func(lines ...string) {
		t.Helper()
		if err := os.WriteFile(rules, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pcap := filepath.Join(dir, "cap.pcapng")
	args := []string{"run", "--socket", sock, "--log-json", "--link=name=tvx,addr=10.9.0.1/24,addr=10.9.0.100/32", "--rules", rules,
		"--trace", "--pcap", pcap, "--metrics=127.0.0.1:0"}

	// A malformed line: tunvs names it and does not start.
	write("-A -t 10.9.0.100:80 -s rr", "-a -t 10.9.0.100:80 -r 10.9.0.5 -m", "-a -t 10.9.0.100:80 -r 10.9.0.6 -m -w many")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin("tunvs"), args...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "line 3: illegal weight specified") {
		t.Errorf("a bad rules file: %v\n%s", err, out)
	}

	good := []string{
		"-A -t 10.9.0.100:80 -s rr",
		"-a -t 10.9.0.100:80 -r 10.9.0.5:80 -m -w 1",
		"-a -t 10.9.0.100:80 -r 10.9.0.6:80 -m -w 1",
		"-A -u 10.9.0.100:53 -s wlc",
		"-a -u 10.9.0.100:53 -r 10.9.0.7:53 -m -w 1",
	}
	write(good...)
	var log lockedBuffer
	d := exec.Command(bin("tunvs"), args...)
	d.Stdout, d.Stderr = &log, &log
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		d.Process.Signal(os.Interrupt)
		d.Wait()
		if t.Failed() {
			t.Logf("daemon log:\n%s", log.String())
		}
	}()
	save := func() string {
		out, _ := admAt(t, sock, "", "-S", "-n")
		return out
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !ok(); {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10 s; -S:\n%s", what, save())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	sorted := func(lines ...string) string { return strings.Join(lines, "\n") + "\n" }
	waitFor("daemon up", func() bool { return save() == sorted(good...) })

	// A datagram from the kernel side of tvx to the UDP service: the
	// trace tells its walk, the capture holds it both ways, the metrics
	// count it.
	for _, c := range [][]string{{"ip", "addr", "add", "10.9.0.2/24", "dev", "tvx"}, {"ip", "link", "set", "tvx", "up"}} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", c, err, out)
		}
	}
	uc, err := net.Dial("udp4", "10.9.0.100:53")
	if err != nil {
		t.Fatal(err)
	}
	uc.Write([]byte("hello"))
	uc.Close()
	waitFor("trace", func() bool {
		return strings.Contains(log.String(), "matched virtual service UDP 10.9.0.100:53 (wlc)")
	})
	for _, want := range []string{
		"arrived on tvx: UDP 10.9.0.2:",
		"scheduled to real server 10.9.0.7:53, connection recorded (both directions)",
		"DNAT: destination 10.9.0.100:53 -> 10.9.0.7:53",
	} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("trace lacks %q", want)
		}
	}
	var maddr string
	for _, l := range strings.Split(log.String(), "\n") {
		if strings.Contains(l, `"message":"metrics listening"`) {
			_, rest, _ := strings.Cut(l, `"addr":"`)
			maddr, _, _ = strings.Cut(rest, `"`)
		}
	}
	resp, err := http.Get("http://" + maddr + "/metrics")
	if err != nil {
		t.Fatalf("metrics at %q: %v", maddr, err)
	}
	mb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(mb), `tunvs_service_in_packets_total{protocol="udp",service="10.9.0.100:53"} 1`) ||
		!strings.Contains(string(mb), `tunvs_server_connections{protocol="udp",service="10.9.0.100:53",server="10.9.0.7:53"} 1`) {
		t.Errorf("metrics:\n%s", mb)
	}
	// The capture (flushed every second): a pcapng file with the link
	// tvx, raw IP, holding the datagram as it came in and as it went out,
	// DNATed, each with its direction.
	waitFor("capture", func() bool {
		f, err := os.Open(pcap)
		if err != nil {
			return false
		}
		defer f.Close()
		ifaces, pkts, err := pcapng.Read(f)
		if err != nil || len(ifaces) != 1 || ifaces[0].Name != "tvx" || ifaces[0].LinkType != pcapng.LinkTypeRaw {
			return false
		}
		var in, out bool
		for _, pk := range pkts {
			p := pk.Data
			if len(p) >= 28 && p[0]>>4 == 4 && p[9] == 17 && binary.BigEndian.Uint16(p[22:]) == 53 {
				dst := netip.AddrFrom4([4]byte(p[16:20])).String()
				in = in || (dst == "10.9.0.100" && pk.Dir == pcapng.DirInbound)
				out = out || (dst == "10.9.0.7" && pk.Dir == pcapng.DirOutbound)
			}
		}
		return in && out
	})

	// SIGHUP with a changed file: a server removed, one added, a weight
	// edited, a service removed, one added.
	write(
		"-A -t 10.9.0.100:80 -s rr",
		"-a -t 10.9.0.100:80 -r 10.9.0.5:80 -m -w 4",
		"-a -t 10.9.0.100:80 -r 10.9.0.8:80 -m -w 1",
		"-A -t 10.9.0.100:443 -s wrr -p 120",
		"-a -t 10.9.0.100:443 -r 10.9.0.5:443 -m -w 1 -x 100 -y 10",
	)
	d.Process.Signal(syscall.SIGHUP)
	// -S saves no thresholds (as ipvsadm 1.31): --thresholds shows them.
	want := sorted(
		"-A -t 10.9.0.100:80 -s rr",
		"-a -t 10.9.0.100:80 -r 10.9.0.5:80 -m -w 4",
		"-a -t 10.9.0.100:80 -r 10.9.0.8:80 -m -w 1",
		"-A -t 10.9.0.100:443 -s wrr -p 120",
		"-a -t 10.9.0.100:443 -r 10.9.0.5:443 -m -w 1",
	)
	waitFor("reload", func() bool { return save() == want })
	if out, _ := admAt(t, sock, "", "-L", "-n", "--thresholds", "-t", "10.9.0.100:443"); !strings.Contains(out, "  -> 10.9.0.5:443                 100        10 ") {
		t.Errorf("thresholds after the reload:\n%s", out)
	}
	for _, ev := range []string{`"event":"server_removed"`, `"event":"server_added"`, `"event":"server_edited"`, `"event":"service_removed"`, `"event":"service_added"`, `"changes":6`} {
		if !strings.Contains(log.String(), ev) {
			t.Errorf("the reload log lacks %s", ev)
		}
	}

	// SIGHUP with a bad file: refused with its line and reason.
	write("-A -t 10.9.0.100:80 -s rr", "-a -t 10.9.0.100:80 -r 10.9.0.5:80 -m -w 70000")
	d.Process.Signal(syscall.SIGHUP)
	waitFor("refusal logged", func() bool { return strings.Contains(log.String(), "rules file refused") })
	if got := save(); got != want {
		t.Errorf("a refused reload changed the table:\n%s", got)
	}
	if l := log.String(); !strings.Contains(l, `"line":2`) || !strings.Contains(l, "illegal weight specified") {
		t.Errorf("the log does not say why:\n%s", l)
	}
}

func TestAdmin(t *testing.T) {
	inSandboxes(t, func(t *testing.T) {
		t.Run("tunvsadm", runAdmin)
		t.Run("rules", runRulesFile)
	})
}
