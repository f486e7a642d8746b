// Package lab builds the classic LVS-NAT lab inside one process, with no
// privileges: a client, the director and real servers as gVisor hosts on
// in-memory links. The director is built by package director, as the
// daemon's is; the client and the real servers are plain netstack hosts.
//
// Topology (the variant without the router):
//
//	client 10.0.0.10/24 --- 10.0.0.3 director 172.16.1.3 (DIP) --- switch --- RS1 172.16.1.5
//	 route 172.16.1.0/24         VIP 172.16.1.100 (alias)          |          RS2 172.16.1.6 ...
//	   via 10.0.0.3                                                 (gateway of the RSs: the VIP)
//
// The real servers' segment is an in-memory learning switch, so ARP runs
// as it does on the article's Ethernet segment.
package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"github.com/tunvs/tunvs/admin"
	"github.com/tunvs/tunvs/director"
	"github.com/tunvs/tunvs/health"
	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/netstack"
	"github.com/tunvs/tunvs/tun"
)

// The article's addresses.
var (
	ClientAddr = netip.MustParsePrefix("10.0.0.10/24")
	DirClient  = netip.MustParsePrefix("10.0.0.3/24")
	DIP        = netip.MustParsePrefix("172.16.1.3/24")
	VIP        = netip.MustParseAddr("172.16.1.100")
	LabNet     = netip.MustParsePrefix("172.16.1.0/24")
	// LocalAddr is the director's full-NAT local address (--fwd
	// fullnat): what the real servers see as their client.
	LocalAddr = netip.MustParseAddr("172.16.1.250")
	// LabGateway is the real servers' own gateway in the in-process
	// full-NAT lab: not the director (nothing answers there; the
	// servers need no route to the client).
	LabGateway = netip.MustParseAddr("172.16.1.1")
)

// serverRules are the lab's ipvsadm rules, servers added in order, as one
// would type them (so with rr the first connection goes to the last one
// added); with fullNAT, DPVS's spelling.
func serverRules(scheduler string, servers int, fullNAT bool) []string {
	rules := []string{fmt.Sprintf("-A -t %s:80 -s %s", VIP, scheduler)}
	method := "-m"
	if fullNAT {
		method = "--fullnat"
		rules = append(rules, fmt.Sprintf("--add-laddr -t %s:80 -z %s", VIP, LocalAddr))
	}
	for i := range servers {
		rules = append(rules, fmt.Sprintf("-a -t %s:80 -r %s %s", VIP, RealServerAddr(i), method))
	}
	return rules
}

// RealServerAddr is the address of real server i (0-based): 172.16.1.5,
// 172.16.1.6, ...
func RealServerAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{172, 16, 1, byte(5 + i)})
}

// MaxServers is the most real servers the in-process lab has: they are
// numbered from 172.16.1.5, and the 96th would be 172.16.1.100, the VIP.
const MaxServers = 95

// RealServerName is what real server i answers: "Proxy01 Real Server", ...
func RealServerName(i int) string { return fmt.Sprintf("Proxy%02d Real Server", i+1) }

// Config chooses the lab's scheduler, size and options.
type Config struct {
	Scheduler string // default rr
	Servers   int    // default 2, at most MaxServers
	// NoBypass sends every packet through the director's stack. By
	// default, as in `tunvs run`, established flows skip it (the
	// bypass: on the lab's Ethernet segments, once the director's stack
	// has resolved the next hop); --trace shows which way each packet
	// went.
	NoBypass bool
	MTU      int // link MTU, default 1500
	// Health, if it has services, checks the real servers from the
	// director (see package health).
	Health health.Config
	// Trace, if set, receives each packet's walk through the director.
	Trace io.Writer
	Log   zerolog.Logger
	// Rules, if set, replace the article's rules (a service on VIP:80
	// with every real server); the client still asks http://VIP/.
	Rules []admin.Command
	// Socket, if set, is the director's control socket, for tunvsadm.
	Socket string
	// Stay keeps Run's lab up after its requests, answering tunvsadm on
	// Socket, until its context ends.
	Stay bool
	// FullNAT makes the real servers full NAT (DPVS's FULLNAT): the
	// director owns LocalAddr, the servers see it as their client, and
	// their gateway is their own (LabGateway), not the director.
	FullNAT bool
}

// Lab is a running in-process lab.
type Lab struct {
	Director *director.Director
	Client   *netstack.Host
	Servers  []*netstack.Host
	switches []*tun.Switch
	servers  []*http.Server
}

// New builds and starts the lab.
func New(cfg Config) (_ *Lab, err error) {
	if cfg.Scheduler == "" {
		cfg.Scheduler = "rr"
	}
	if cfg.Servers == 0 {
		cfg.Servers = 2
	}
	if cfg.Servers < 1 || cfg.Servers > MaxServers {
		return nil, fmt.Errorf("lab: %d real servers: want 1 to %d", cfg.Servers, MaxServers)
	}
	if cfg.MTU == 0 {
		cfg.MTU = 1500
	}
	l := &Lab{}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	clientNet, labNet := tun.NewSwitch(), tun.NewSwitch()
	l.switches = []*tun.Switch{clientNet, labNet}

	// The rules of the article.
	rules := serverRules(cfg.Scheduler, cfg.Servers, cfg.FullNAT)
	cmds, err := admin.ParseRules(strings.NewReader(strings.Join(rules, "\n")))
	if err != nil {
		return nil, err
	}
	if cfg.Rules != nil {
		cmds = cfg.Rules
	}
	if l.Director, err = newDirector(cfg, cmds, clientNet, labNet); err != nil {
		return nil, err
	}

	l.Client = netstack.New(netstack.Config{Log: cfg.Log})
	if err := hostOn(l.Client, clientNet.Port("client", cfg.MTU), ClientAddr); err != nil {
		return nil, err
	}
	if err := l.Client.AddRoute(LabNet, DirClient.Addr(), ""); err != nil {
		return nil, err
	}
	for i := range cfg.Servers {
		h := netstack.New(netstack.Config{Log: cfg.Log})
		l.Servers = append(l.Servers, h)
		if err := hostOn(h, labNet.Port(fmt.Sprintf("rs%d", i+1), cfg.MTU), netip.PrefixFrom(RealServerAddr(i), 24)); err != nil {
			return nil, err
		}
		// The real servers' gateway is the VIP: every reply passes
		// back through the director. With full NAT it is their own:
		// their replies go to the local address, on their segment.
		gw := VIP
		if cfg.FullNAT {
			gw = LabGateway
		}
		if err := h.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), gw, ""); err != nil {
			return nil, err
		}
		ln, err := h.ListenTCP(netip.AddrPortFrom(RealServerAddr(i), 80))
		if err != nil {
			return nil, err
		}
		body := RealServerName(i) + "\n"
		srv := &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, body)
			}),
			ReadHeaderTimeout: 10 * time.Second,
		}
		l.servers = append(l.servers, srv)
		go srv.Serve(ln)
	}
	return l, nil
}

// newDirector is the lab's director, on a port of each switch, with the
// lab's options.
func newDirector(cfg Config, cmds []admin.Command, clientNet, labNet *tun.Switch) (*director.Director, error) {
	d, err := director.New(director.Config{
		Links: []director.Link{
			{Name: "eth0", Dev: clientNet.Port("director-eth0", cfg.MTU), Addrs: []netip.Prefix{DirClient}},
			{Name: "eth1", Dev: labNet.Port("director-eth1", cfg.MTU), Addrs: labAddrs(cfg.FullNAT)},
		},
		Rules:  cmds,
		Bypass: !cfg.NoBypass,
		Health: cfg.Health,
		Trace:  cfg.Trace,
		Log:    cfg.Log,
		Socket: cfg.Socket,
	})
	if err != nil {
		return nil, fmt.Errorf("lab: director: %w", err)
	}
	return d, nil
}

// labAddrs are the director's addresses on the lab segment: the DIP, the
// VIP and, with full NAT, the local address.
func labAddrs(fullNAT bool) []netip.Prefix {
	a := []netip.Prefix{DIP, netip.PrefixFrom(VIP, 32)}
	if fullNAT {
		a = append(a, netip.PrefixFrom(LocalAddr, 32))
	}
	return a
}

// hostRcvBuf bounds the TCP receive buffer, and so the window, of the
// lab's client and real servers. A switch port's ring holds 256 frames
// and drops what does not fit, where a kernel's sender would be held back
// (TCP small queues, the qdisc); with gVisor's default 1 MB window a
// bulk transfer's bursts overran the director's ring once the bypass
// made it fast, and the tail drops cost the sender retransmission
// timeouts of seconds (4 MB took up to 35 s). 128 KiB is about 90 frames
// in flight, under the ring, and no limit on a link whose round trip is
// tens of microseconds.
const hostRcvBuf = 128 << 10

// hostOn puts h on dev with addr, as one of the lab's plain hosts.
func hostOn(h *netstack.Host, dev tun.Device, addr netip.Prefix) error {
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4096, Default: hostRcvBuf, Max: hostRcvBuf}
	if err := h.Stack().SetTransportProtocolOption(tcp.ProtocolNumber, &rcv); err != nil {
		return fmt.Errorf("lab: receive buffer: %v", err)
	}
	if _, err := h.AddNIC("eth0", dev); err != nil {
		return err
	}
	return h.AddAddress("eth0", addr)
}

// Get makes one HTTP request from the client to the VIP on a new
// connection (as curl does) and returns the body.
func (l *Lab) Get(ctx context.Context) (string, error) {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			ap, err := netip.ParseAddrPort(addr)
			if err != nil {
				return nil, err
			}
			return l.Client.DialTCP(ctx, ap)
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+VIP.String()+"/", nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// NAT is the director's table.
func (l *Lab) NAT() *nat.Table { return l.Director.NAT }

// Close stops everything.
func (l *Lab) Close() error {
	var errs []error
	for _, s := range l.servers {
		_ = s.Close()
	}
	if l.Director != nil {
		errs = append(errs, l.Director.Close())
	}
	if l.Client != nil {
		errs = append(errs, l.Client.Close())
	}
	for _, h := range l.Servers {
		errs = append(errs, h.Close())
	}
	for _, s := range l.switches {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}

// Run builds the lab, makes n requests, prints each reply and then the
// director's tables, as `tunvs lab` does.
func Run(ctx context.Context, cfg Config, n int, w io.Writer) error {
	l, err := New(cfg)
	if err != nil {
		return err
	}
	defer l.Close()
	rules := "scheduler " + cfg.Scheduler
	if cfg.Rules != nil {
		rules = fmt.Sprintf("%d rules given", len(cfg.Rules))
	}
	kind := "LVS-NAT lab"
	if cfg.FullNAT {
		kind = fmt.Sprintf("Full-NAT lab (local address %s, the real servers' gateway %s)", LocalAddr, LabGateway)
	}
	fmt.Fprintf(w, "%s: client %s, director %s (DIP %s, VIP %s), %d real servers, %s\n\n",
		kind, ClientAddr.Addr(), DirClient.Addr(), DIP.Addr(), VIP, len(l.Servers), rules)
	for i := range n {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		body, err := l.Get(rctx)
		cancel()
		if err != nil {
			return fmt.Errorf("request %d: %w", i+1, err)
		}
		fmt.Fprintf(w, "%d: %s\n", i+1, body)
	}
	// Let the last FINs and ACKs cross before showing the table.
	time.Sleep(100 * time.Millisecond)
	fmt.Fprintf(w, "\n$ tunvsadm -L -n\n")
	admin.List(w, l.NAT(), admin.FmtNumeric)
	fmt.Fprintf(w, "\n$ tunvsadm -L -n --stats\n")
	admin.List(w, l.NAT(), admin.FmtNumeric|admin.FmtStats)
	fmt.Fprintf(w, "\n$ tunvsadm -Lnc\n")
	admin.ListConns(w, l.NAT(), time.Now(), admin.FmtNumeric)
	if cfg.FullNAT {
		fmt.Fprintf(w, "\n$ tunvsadm --get-laddr\n")
		admin.ListLocalAddrs(w, l.NAT().Services(), true)
	}
	if cfg.Stay && cfg.Socket != "" {
		fmt.Fprintf(w, "\nThe lab stays up until Ctrl-C; its director answers tunvsadm on %s:\n  tunvsadm --socket %s -L -n\n", cfg.Socket, cfg.Socket)
		<-ctx.Done()
	}
	return nil
}
