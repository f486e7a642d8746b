//go:build linux

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tunvs/tunvs/internal/netns"
)

// TestProxyProtocol: full NAT with the PROXY protocol in front of a real
// nginx (Debian's nginx-light, the article's real server), as root and as
// uid 65534. RS1's nginx listens with proxy_protocol and logs
// $proxy_protocol_addr; RS2's nginx does not speak it and its real server
// is set to "disable". The v1 header on IPv4 and v2 on IPv6: RS1's log
// shows the client's address for every request, also for requests whose
// first data segment the client's own nftables dropped once, so that the
// kernel retransmitted it, and for requests whose first data segment
// the real server's nftables dropped once after the director had put the
// header in; RS2 sees plain full NAT.
func TestProxyProtocol(t *testing.T) {
	for _, tool := range []string{"nginx", "nft"} {
		if _, err := lookTool(tool); err != nil {
			netns.Unavailable(t, "the PROXY protocol test needs %s (Debian's nginx-light, nftables): %v", tool, err)
		}
	}
	inSandboxes(t, runProxyProtocol)
}

// lookTool finds a program on PATH or in /usr/sbin (nginx is there, and
// an unprivileged PATH may not have it).
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return exec.LookPath(filepath.Join("/usr/sbin", name))
}

const ppPort = 81

func runProxyProtocol(t *testing.T) {
	var extra []string
	for _, c := range []struct {
		vip     string
		setting string
		lad     string
	}{{vip4.String(), "v1", lad4.String()}, {"[" + vip6.String() + "]", "v2", lad6.String()}} {
		svc := fmt.Sprintf("%s:%d", c.vip, ppPort)
		rs1, rs2 := "172.16.1.5", "172.16.1.6"
		if strings.HasPrefix(c.vip, "[") {
			rs1, rs2 = "[fd00:2::5]", "[fd00:2::6]"
		}
		extra = append(extra,
			"--rule", fmt.Sprintf("-A -t %s -s rr --proxy-protocol %s", svc, c.setting),
			"--rule", fmt.Sprintf("--add-laddr -t %s -z %s", svc, c.lad),
			"--rule", fmt.Sprintf("-a -t %s -r %s:8081 --fullnat", svc, rs1),
			// RS2's nginx does not speak it.
			"--rule", fmt.Sprintf("-a -t %s -r %s:8081 --fullnat --proxy-protocol disable", svc, rs2))
	}
	e := setup(t, opts{fullNAT: true, extra: extra})
	logs := map[string]string{}
	for i, r := range e.rss {
		logs[r.name] = e.startNginx(r, i == 0)
	}
	list := e.adm("-L", "-n")
	for _, want := range []string{fmt.Sprintf("TCP  172.16.1.100:%d rr ppv1", ppPort), "ppdisable"} {
		if !strings.Contains(list, want) {
			t.Fatalf("-L -n lacks %q:\n%s", want, list)
		}
	}

	c := e.httpClient()
	urls := []string{fmt.Sprintf("http://172.16.1.100:%d/", ppPort), fmt.Sprintf("http://[%s]:%d/", vip6, ppPort)}
	const plain, dropped = 20, 10
	for _, u := range urls {
		for range plain {
			get(t, c, u)
		}
	}
	// The client's first data segment of every new connection to the
	// service is dropped once (the conntrack mark makes it once per
	// connection); the kernel retransmits it.
	e.nft(e.client, `table inet pp {
	chain out {
		type filter hook output priority 0;
		tcp dport `+fmt.Sprint(ppPort)+` tcp flags & (syn|rst|fin) == 0 ip length > 60 ct mark 0 ct mark set 1 counter drop
		tcp dport `+fmt.Sprint(ppPort)+` tcp flags & (syn|rst|fin) == 0 ip6 length > 40 ct mark 0 ct mark set 1 counter drop
	}
}`)
	for _, u := range urls {
		for range dropped {
			get(t, c, u)
		}
	}
	if n := nftDrops(t, e.client, "out"); n != 2*dropped {
		t.Fatalf("the client's nftables dropped %d first segments, want %d", n, 2*dropped)
	}
	if _, err := e.client.Run(context.Background(), "nft", "delete", "table", "inet", "pp"); err != nil {
		t.Fatal(err)
	}
	// Now the director has sent the first segment with its header when
	// the real server's nftables drop it once: the client's
	// retransmission must get the same header again, and the
	// sequence numbers after it stay shifted by its length.
	for _, r := range e.rss {
		e.nft(r.host, `table inet pp {
	chain in {
		type filter hook input priority 0;
		tcp dport 8081 tcp flags & (syn|rst|fin) == 0 ip length > 60 ct mark 0 ct mark set 1 counter drop
		tcp dport 8081 tcp flags & (syn|rst|fin) == 0 ip6 length > 40 ct mark 0 ct mark set 1 counter drop
	}
}`)
	}
	for _, u := range urls {
		for range dropped {
			get(t, c, u)
		}
	}
	if n := nftDrops(t, e.rss[0].host, "in") + nftDrops(t, e.rss[1].host, "in"); n != 2*dropped {
		t.Fatalf("the real servers' nftables dropped %d first segments, want %d", n, 2*dropped)
	}

	// Every request is in the logs: RS1's with the client's address from
	// the header (and the local address as the peer), RS2's with no
	// header, only the local address.
	total := 2 * (plain + 2*dropped)
	want := map[string][]string{
		"RS1": {fmt.Sprintf("pp=%s peer=%s ", cip4, lad4), fmt.Sprintf("pp=%s peer=%s ", cip6, lad6)},
		"RS2": {fmt.Sprintf("pp=- peer=%s ", lad4), fmt.Sprintf("pp=- peer=%s ", lad6)},
	}
	deadline := time.Now().Add(10 * time.Second)
	for name, file := range logs {
		lines := logLines(file, total/2, deadline)
		if len(lines) != total/2 {
			t.Errorf("%s logged %d requests, want %d:\n%s", name, len(lines), total/2, strings.Join(lines, "\n"))
			continue
		}
		counts := map[string]int{}
		for _, l := range lines {
			ok := false
			for _, w := range want[name] {
				if strings.HasPrefix(l, w) && strings.HasSuffix(l, " 200") {
					counts[w]++
					ok = true
				}
			}
			if !ok {
				t.Errorf("%s: log line %q, want one of %q", name, l, want[name])
			}
		}
		for _, w := range want[name] {
			if counts[w] != total/4 {
				t.Errorf("%s: %d lines %q, want %d", name, counts[w], w, total/4)
			}
		}
	}
	if t.Failed() {
		t.Logf("-L -n:\n%s", list)
	}
	e.drain(20 * time.Second)
}

// startNginx runs nginx in r's namespace on port 8081 (IPv4 and IPv6),
// with proxy_protocol on the listeners if pp, logging each request as
// "pp=$proxy_protocol_addr peer=$remote_addr $request $status" to the
// returned file. Everything is in a temporary directory: the pid file,
// the logs, the temp paths. It runs in the foreground without a master
// process: in the sandbox's user namespace only root is mapped, so nginx
// must neither switch its workers to another user nor chown its temp
// directories to one (ngx_create_paths); "user root root" keeps both on
// the sandbox's root, which is the unprivileged uid outside.
func (e *env) startNginx(r *rs, pp bool) string {
	t := e.t
	ngx, err := lookTool("nginx")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "tunvs-e2e-nginx-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	flag := ""
	if pp {
		flag = " proxy_protocol"
	}
	conf := fmt.Sprintf(`user root root;
daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 256; }
http {
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	log_format pp 'pp=$proxy_protocol_addr peer=$remote_addr $request $status';
	access_log %[1]s/access.log pp;
	server {
		listen 8081%[2]s;
		listen [::]:8081%[2]s;
		location / { return 200 "%[3]s"; }
	}
}
`, dir, flag, r.name)
	file := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := r.host.Command(ctx, ngx, "-c", file, "-e", filepath.Join(dir, "error.log"))
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("nginx in %s: %v", r.name, err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			errs, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("%s nginx: %s\n%s", r.name, out, errs)
		}
	})
	// The pid file is written once the listeners are open.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "nginx.pid")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			errs, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx in %s did not start: %s\n%s", r.name, out, errs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return filepath.Join(dir, "access.log")
}

// nft loads an nftables ruleset in host h.
func (e *env) nft(h *netns.Host, rules string) {
	e.t.Helper()
	f, err := os.CreateTemp("", "tunvs-e2e-nft-")
	if err != nil {
		e.t.Fatal(err)
	}
	defer os.Remove(f.Name())
	f.WriteString(rules)
	f.Close()
	os.Chmod(f.Name(), 0o644)
	if out, err := h.Run(context.Background(), "nft", "-f", f.Name()); err != nil {
		e.t.Fatalf("nft in %s: %v\n%s", h, err, out)
	}
}

// nftDrops sums the counters of chain inet pp NAME in h.
func nftDrops(t *testing.T, h *netns.Host, chain string) int {
	t.Helper()
	out, err := h.Run(context.Background(), "nft", "list", "chain", "inet", "pp", chain)
	if err != nil {
		t.Fatal(err)
	}
	drops := 0
	for _, m := range regexp.MustCompile(`counter packets (\d+)`).FindAllStringSubmatch(out, -1) {
		var n int
		fmt.Sscan(m[1], &n)
		drops += n
	}
	return drops
}

// TestProxyProtocolTAP: the same through a one-armed director on a TAP
// (the first segment with its header leaves by the bypass with its
// Ethernet header rewritten), v2, as root and as uid 65534; half of the
// requests have their first data segment dropped once by the real
// server's nftables after the director put the header in.
func TestProxyProtocolTAP(t *testing.T) {
	for _, tool := range []string{"nginx", "nft"} {
		if _, err := lookTool(tool); err != nil {
			netns.Unavailable(t, "the PROXY protocol test needs %s (Debian's nginx-light, nftables): %v", tool, err)
		}
	}
	inSandboxes(t, runProxyProtocolTAP)
}

func runProxyProtocolTAP(t *testing.T) {
	e := newEnv(t)
	svc := fmt.Sprintf("%s:%d", vip4, ppPort)
	r := e.fullNATOneArmed(t, "tunvs-e2e-pp-",
		"--rule", fmt.Sprintf("-A -t %s -s rr --proxy-protocol v2", svc),
		"--rule", fmt.Sprintf("--add-laddr -t %s -z %s", svc, lad4),
		"--rule", fmt.Sprintf("-a -t %s -r %s:8081 --fullnat", svc, rsV4))
	log := e.startNginx(r, true)

	c := e.httpClient()
	url := fmt.Sprintf("http://%s:%d/", vip4, ppPort)
	const n = 10
	for range n {
		if got := get(t, c, url); got != "RS1" {
			t.Fatalf("answer %q", got)
		}
	}
	e.nft(r.host, `table inet pp {
	chain in {
		type filter hook input priority 0;
		tcp dport 8081 tcp flags & (syn|rst|fin) == 0 ip length > 60 ct mark 0 ct mark set 1 counter drop
	}
}`)
	for range n {
		if got := get(t, c, url); got != "RS1" {
			t.Fatalf("answer %q", got)
		}
	}
	if d := nftDrops(t, r.host, "in"); d != n {
		t.Fatalf("the real server's nftables dropped %d first segments, want %d", d, n)
	}
	want := fmt.Sprintf("pp=%s peer=%s GET / HTTP/1.1 200", cip4, lad4)
	deadline := time.Now().Add(10 * time.Second)
	lines := logLines(log, 2*n, deadline)
	if len(lines) != 2*n {
		t.Fatalf("nginx logged %d requests, want %d:\n%s", len(lines), 2*n, strings.Join(lines, "\n"))
	}
	for _, l := range lines {
		if l != want {
			t.Errorf("log line %q, want %q", l, want)
		}
	}
}

// logLines reads file's lines once it has n or deadline passes (nginx
// writes its access log line after the response is sent).
func logLines(file string, n int, deadline time.Time) []string {
	for {
		b, _ := os.ReadFile(file)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) >= n || time.Now().After(deadline) {
			return lines
		}
		time.Sleep(100 * time.Millisecond)
	}
}
