//go:build linux

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tunvs/tunvs/internal/netns"
	"github.com/tunvs/tunvs/lab"
)

// haConf is the keepalived.conf of one director of an HA pair on the
// article's one-armed LAN: the lab's (one virtual router moving the VIP
// and the real servers' gateway, which LVS-NAT needs on whichever
// director is master; the sync daemon it drives) and the service.
func haConf(link string, prio int) string {
	return lab.HAConf(link, prio) + `virtual_server 172.16.1.100 80 {
    lb_algo rr
    lb_kind NAT
    protocol TCP
    real_server 172.16.1.5 8080 {
        weight 1
    }
    real_server 172.16.1.6 8080 {
        weight 1
    }
}
`
}

// TestFailover is two tunvs directors on the article's LAN, an HA pair:
// A (priority 150) master, B (100) backup, the connection sync daemons
// following VRRP. Under load — several hundred long-lived connections
// through A plus a stream of new ones — A is SIGKILLed. B takes over the
// virtual addresses (the VIP and the real servers' gateway) and, from its
// synced table, the connections: those older than 3 s must survive and
// complete through B (at least 99%), and new connections must work again
// within Master_Down_Interval of the kill. The figures are logged.
func TestFailover(t *testing.T) {
	inSandboxes(t, func(t *testing.T) { runFailover(t, false) })
}

// TestFailoverSynProxy is TestFailover with the SYN proxy on for every
// connection (synproxy=2 on both directors): each long-lived connection
// lives with its sequence numbers and timestamps translated, and B can
// carry it on only with the translation A synced (nat/synsync.go). All
// of them must have been made by A's SYN proxy.
func TestFailoverSynProxy(t *testing.T) {
	inSandboxes(t, func(t *testing.T) { runFailover(t, true) })
}

func runFailover(t *testing.T, synproxy bool) {
	const (
		longLived = 400
		interval  = time.Second // advert_int
	)
	e := newEnv(t)
	must, add := e.builders(t)
	e.client = add("client")
	lan := add("lan")
	ports := []string{e.addRouter(lan, must)}
	for i, a := range []string{"172.16.1.5", "172.16.1.6"} {
		h := add(fmt.Sprintf("rs%d", i+1))
		port := fmt.Sprintf("rs%d", i+1)
		must(e.topo.Veth(h, "eth0", lan, port, 0))
		must(h.AddAddr("eth0", a+"/24"))
		// LVS-NAT: the real servers' gateway is the director, here
		// the second virtual address, which moves with the master.
		must(h.AddRoute("default", "via", "172.16.1.254"))
		ports = append(ports, port)
		echoServer(t, h, fmt.Sprintf("RS%d", i+1))
	}
	must(lan.Bridge("br0", ports...))

	dir, err := os.MkdirTemp("", "tunvs-e2e-failover-")
	must(err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	start := func(name, link, addr string, prio int) *tvDirector {
		conf := filepath.Join(dir, name+".conf")
		must(os.WriteFile(conf, []byte(haConf(link, prio)), 0o644))
		args := []string{"--log-level", "info", "--metrics=127.0.0.1:0",
			"--link=name=" + link + ",kind=tap,addr=" + addr + "/24", "--route=default,via=172.16.1.200", "--keepalived-conf", conf}
		if synproxy {
			args = append(args, "--sysctl", "synproxy=2")
		}
		d := startDirector(t, e.topo.Root(), name, filepath.Join(dir, name+".sock"), args, link)
		must(e.topo.Root().MoveLink(link, lan))
		must(lan.IP("link", "set", "dev", link, "master", "br0"))
		must(lan.LinkUp(link))
		return d
	}
	a := start("A", "tva", "172.16.1.3", 150)
	b := start("B", "tvb", "172.16.1.2", 100)
	vmac := "00:00:5e:00:01:33"
	eventually(t, 20*time.Second, "A master", func() bool { return routerSees(lan, vmac, "tva") },
		func() string { return "the bridge has not learned the virtual MAC on A's port" })

	vip := "172.16.1.100:80"
	dial := func(timeout time.Duration) (net.Conn, error) {
		var c net.Conn
		err := e.client.Do(func() (err error) {
			c, err = net.DialTimeout("tcp4", vip, timeout)
			return err
		})
		return c, err
	}
	// The stream of new connections: one every 50 ms, each a line
	// echoed within 500 ms (no SYN retransmission: a dial that fails
	// during the takeover fails fast and the next one tries).
	type attempt struct {
		at time.Time
		ok bool
	}
	var (
		amu      sync.Mutex
		attempts []attempt
		stopNew  = make(chan struct{})
		newDone  = make(chan struct{})
	)
	go func() {
		defer close(newDone)
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		var wg sync.WaitGroup
		defer wg.Wait()
		for {
			select {
			case <-stopNew:
				return
			case <-tk.C:
			}
			wg.Add(1)
			go func(at time.Time) {
				defer wg.Done()
				ok := false
				if c, err := dial(500 * time.Millisecond); err == nil {
					c.SetDeadline(at.Add(time.Second))
					if _, err := io.WriteString(c, "new\n"); err == nil {
						l, err := bufio.NewReader(c).ReadString('\n')
						ok = err == nil && strings.HasSuffix(l, " new\n")
					}
					c.Close()
				}
				amu.Lock()
				attempts = append(attempts, attempt{at, ok})
				amu.Unlock()
			}(time.Now())
		}
	}()

	// The long-lived connections: a line echoed now, another after the
	// failover, then a clean close.
	type long struct {
		opened time.Time
		err    error
	}
	lives := make([]long, longLived)
	bye := make(chan struct{})
	var wg sync.WaitGroup
	var opened atomic.Int64
	for i := range lives {
		wg.Add(1)
		go func(l *long) {
			defer wg.Done()
			c, err := dial(5 * time.Second)
			if err != nil {
				l.err = fmt.Errorf("dial: %w", err)
				return
			}
			defer c.Close()
			r := bufio.NewReader(c)
			echo := func(s string) error {
				c.SetDeadline(time.Now().Add(30 * time.Second))
				if _, err := io.WriteString(c, s); err != nil {
					return err
				}
				// The real server answers "RSn LINE".
				got, err := r.ReadString('\n')
				if err == nil && !strings.HasSuffix(got, " "+s) {
					err = fmt.Errorf("echo %q, want %q", got, s)
				}
				return err
			}
			if l.err = echo("hello\n"); l.err != nil {
				return
			}
			l.opened = time.Now()
			opened.Add(1)
			<-bye
			if l.err = echo("bye\n"); l.err != nil {
				l.err = fmt.Errorf("after the failover: %w", l.err)
				return
			}
			// A clean close: the server's FIN answers ours.
			c.(*net.TCPConn).CloseWrite()
			if _, err := r.ReadByte(); err != io.EOF {
				l.err = fmt.Errorf("close: %v", err)
			}
		}(&lives[i])
	}
	eventually(t, 60*time.Second, "long-lived connections open", func() bool { return opened.Load() == longLived },
		func() string { return fmt.Sprintf("%d of %d open", opened.Load(), longLived) })
	// Older than 3 s, and past the sync master's 2 s flush.
	time.Sleep(4 * time.Second)
	synced := b.adm("-L", "-n", "-c")
	bMetrics := scrapeMetrics(t, b.log.String())
	if synproxy {
		made := metric(t, scrapeMetrics(t, a.log.String()), `tunvs_synproxy_total{event="cookie_acks"}`)
		t.Logf("failover: A's SYN proxy made %d connections before the kill", made)
		if made < longLived {
			t.Errorf("A's SYN proxy made %d connections: fewer than the %d long-lived ones", made, longLived)
		}
	}

	kill := time.Now()
	a.stop(syscall.SIGKILL)
	takeover := eventually(t, 20*time.Second, "B takes over", func() bool { return routerSees(lan, vmac, "tvb") },
		func() string { return "the bridge has not learned the virtual MAC on B's port" })
	time.Sleep(3 * time.Second)
	bAfter := scrapeMetrics(t, b.log.String())
	close(bye)
	wg.Wait()
	close(stopNew)
	<-newDone

	var old, survived int
	var failures []string
	for _, l := range lives {
		if l.opened.IsZero() || kill.Sub(l.opened) < 3*time.Second {
			continue
		}
		old++
		if l.err == nil {
			survived++
		} else if len(failures) < 5 {
			failures = append(failures, l.err.Error())
		}
	}
	sort.Slice(attempts, func(i, j int) bool { return attempts[i].at.Before(attempts[j].at) })
	var resume time.Duration = -1
	var before, after, failed int
	for _, at := range attempts {
		switch {
		case at.at.Before(kill):
			before++
		case at.ok && resume < 0:
			resume = at.at.Sub(kill)
			after++
		case at.ok:
			after++
		default:
			failed++
		}
	}
	// B's metrics: the records it took from A's sync master, then its
	// router master and its sync daemon the master.
	applied := metric(t, bMetrics, "tunvs_sync_backup_conns_total")
	t.Logf("failover: B applied %d synced connection records before the kill", applied)
	if applied < longLived {
		t.Errorf("B applied %d synced records: fewer than the %d long-lived connections", applied, longLived)
	}
	for _, w := range []string{`tunvs_vrrp_state{vrrp="VI_1",link="tvb",vrid="51"} 2`, `tunvs_vrrp_became_master_total{vrrp="VI_1",link="tvb",vrid="51"} 1`,
		`tunvs_sync_daemon_running{role="master"} 1`, `tunvs_sync_daemon_running{role="backup"} 0`} {
		if !strings.Contains(bAfter, w+"\n") {
			t.Errorf("B's metrics after the takeover have no %q", w)
		}
	}
	mdi := 3*interval + interval*(256-100)/256
	t.Logf("failover: %d long-lived connections at least 3 s old at the SIGKILL, %d survived and completed through B (%.2f%%)",
		old, survived, 100*float64(survived)/float64(max(old, 1)))
	t.Logf("failover: the bridge saw B at the virtual MAC %.2f s after the kill; new connections worked again %.2f s after it (%.2f advertisement intervals; B's Master_Down_Interval %.2f s)",
		takeover.Seconds(), resume.Seconds(), float64(resume)/float64(interval), mdi.Seconds())
	t.Logf("failover: new connections: %d before the kill, %d failed after it, %d succeeded after it", before, failed, after)
	if old < longLived*9/10 {
		t.Errorf("only %d of %d long-lived connections were 3 s old at the kill", old, longLived)
	}
	if survived*100 < old*99 {
		t.Errorf("%d of %d old connections survived: want at least 99%%; first failures: %v\nB's table before the kill:\n%s", survived, old, failures, synced)
	}
	// RFC 5798 6.4.2: the backup takes over Master_Down_Interval after
	// the last advert it heard, which the kill comes after.
	if resume < 0 || resume > mdi+interval/2 {
		t.Errorf("new connections resumed %v after the kill: want within Master_Down_Interval (%v)", resume, mdi)
	}
}

// routerSees reports whether the bridge in lan has learned mac on port.
func routerSees(lan *netns.Host, mac, port string) bool {
	out, err := lan.Run(context.Background(), "bridge", "fdb", "show", "br", "br0")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == mac && f[1] == "dev" && f[2] == port {
			return true
		}
	}
	return false
}
