//go:build linux

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tunvs run --keepalived-conf as an ordinary user in a user and network
// namespace of its own: the services of the keepalived.conf listed by
// tunvsadm; the file changed and SIGHUP: the difference applied; a file
// tunvs refuses (an lb_kind TUN type keepalived does not know) and SIGHUP: nothing changes; and a sysctl set
// and listed through tunvsadm.
func TestKeepalivedConfDaemon(t *testing.T) {
	unshare, asUser := ordinaryUser(t)
	outerNet, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "tunvs-keepalived-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o777)
	conf := func(name, extra string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(`! as keepalived reads it
vrrp_instance VI_1 {
    virtual_router_id 51
}
virtual_server 172.16.1.100 80 {
    lb_algo rr
    lb_kind NAT
    protocol TCP
    real_server 172.16.1.5 80 {
        weight 1
    }
`+extra+`}
`), 0o644)
		os.Chmod(p, 0o666) // the namespace's user copies over it
		return p
	}
	kc := conf("keepalived.conf", "")
	v2 := conf("v2", "    real_server 172.16.1.6 80 {\n        weight 4\n    }\n")
	bad := conf("bad", "    lb_kind TUN type vxlan\n")
	logf := filepath.Join(dir, "daemon.log")
	script := fmt.Sprintf(`
[ "$(readlink /proc/self/ns/net)" != %q ] || { echo "not in a fresh network namespace: refusing"; exit 99; }
tunvs run --link name=tunvs0,addr=172.16.1.3/24,addr=172.16.1.100/32 --keepalived-conf %s >%s 2>&1 &
pid=$!
i=0
until tunvsadm -L -n >/dev/null 2>&1; do
	kill -0 $pid 2>/dev/null || { echo "tunvs run exited"; exit 98; }
	i=$((i+1)); [ $i -lt 400 ] || { echo "tunvs run did not answer"; kill $pid; exit 97; }
	sleep 0.05
done
echo "== start"; tunvsadm -S -n
# waitfor TEXT: SIGHUP's reload is applied on the daemon's loop.
waitfor() { i=0; until grep -q "$1" %s; do i=$((i+1)); [ $i -lt 200 ] || { echo "no $1 in the log"; break; }; sleep 0.05; done; }
cp %s %s; kill -HUP $pid; waitfor "keepalived.conf reloaded changes=1"
echo "== reloaded"; tunvsadm -S -n
cp %s %s; kill -HUP $pid; waitfor "keepalived.conf refused"
echo "== refused"; tunvsadm -S -n
tunvsadm --sysctl expire_nodest_conn=1
echo "== sysctl"; tunvsadm -L --sysctl | grep expire_nodest
kill -INT $pid
wait $pid
echo "daemon exit=$?"
`, outerNet, kc, logf, logf, v2, kc, bad, kc)
	env := []string{"PATH=" + os.Getenv(envBin) + ":/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/", "TMPDIR=" + dir}
	argv := append(append([]string{}, asUser...), unshare, "--user", "--map-root-user", "--net", "--", "/bin/sh", "-c", script)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, argv[0], argv[1:]...)
	c.Env, c.Dir = env, "/"
	out, err := c.CombinedOutput()
	log, _ := os.ReadFile(logf)
	if err != nil {
		t.Fatalf("%v:\n%s\ndaemon log:\n%s", err, out, log)
	}
	want := `== start
-A -t 172.16.1.100:80 -s rr
-a -t 172.16.1.100:80 -r 172.16.1.5:80 -m -w 1
== reloaded
-A -t 172.16.1.100:80 -s rr
-a -t 172.16.1.100:80 -r 172.16.1.5:80 -m -w 1
-a -t 172.16.1.100:80 -r 172.16.1.6:80 -m -w 4
== refused
-A -t 172.16.1.100:80 -s rr
-a -t 172.16.1.100:80 -r 172.16.1.5:80 -m -w 1
-a -t 172.16.1.100:80 -r 172.16.1.6:80 -m -w 4
== sysctl
net.ipv4.vs.expire_nodest_conn = 1
daemon exit=0
`
	if string(out) != want {
		t.Errorf("got:\n%s\nwant:\n%s\ndaemon log:\n%s", out, want, log)
	}
	// The warnings and the refusal name the file and line.
	for _, w := range []string{"vrrp_instance VI_1 ignored: it needs an interface, a virtual_router_id and a virtual_ipaddress file=" + kc + " line=2",
		kc + ":12: keepalived.conf: lb_kind: unknown tunnel type vxlan for virtual server"} {
		if !strings.Contains(string(log), w) {
			t.Errorf("daemon log has no %q:\n%s", w, log)
		}
	}
}
