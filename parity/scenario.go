// Package parity is tunvs's differential test against kernel IPVS: the
// same scenario (ipvsadm rules, real servers added in a chosen order,
// weight edits, connections from chosen source addresses and ports, some
// held open) runs against Debian's kernel with ip_vs under qemu (the
// ipvsrun program, in parity/cmd/ipvsrun) and against tunvs's nat.Table in
// process (RunTunvs), and the real server chosen for every connection and
// every `ipvsadm -L -n` listing are compared. See README.md.
//
// A scenario is a text file, one step a line ('#' starts a comment):
//
//	ipvsadm ARGS...          run ipvsadm (kernel) / tunvsadm (tunvs) in the director
//	tcp SRC:PORT VIP:PORT [close]
//	                         open a TCP connection from SRC:PORT; it stays
//	                         open (ESTABLISHED) unless "close" is given.
//	                         SRC:P1-P2 opens one connection per port, in order.
//	close SRC:PORT           close a held connection (FIN both ways)
//	udp SRC:PORT VIP:PORT    one datagram, the real server answers
//	list                     snapshot `ipvsadm -L -n`
//	cmd ARGS...              run ipvsadm ARGS (tunvsadm ARGS) and record its
//	                         exit status, standard output and standard error,
//	                         all three compared to the letter. Words are split
//	                         at blanks; 'single quotes' keep blanks and make
//	                         empty words.
//	stdin TEXT               a line of standard input for the next cmd (-R)
//	node_exporter            node_exporter's IPVS series (its own binary on
//	                         the kernel side, tunvs's metrics here)
//	keepalived               the stdin lines before it are a keepalived.conf:
//	                         keepalived 2.2 (Debian's, checkers only) loads it
//	                         into the kernel, tunvs's package keepalived into
//	                         the table; `-L -n` and `-L -n --thresholds` of
//	                         both are compared
//	server ADDR:PORT         an HTTP real server (for live checkers)
//	live SECONDS             the stdin lines before it are a keepalived.conf
//	                         that keepalived (kernel) and tunvs run (on a TAP
//	                         in the VM) both run, checkers and all; after
//	                         SECONDS both -L -n are compared (live.go)
//	stop ADDR:PORT, start ADDR:PORT
//	                         stop or restart a server's listener
//	settle SECONDS           wait, then compare both -L -n again
//
// Topology inside the VM, one set of network namespaces per scenario (IPVS
// state is per namespace, so scenarios cannot leak into each other): the
// director holds the VIPs and routes; clients live in one namespace with
// every source address the scenario uses; every real server address is its
// own namespace on a bridge of the director's, 10.1.0.254/24, so real
// server addresses must be in 10.1.0.0/24 and client addresses outside
// 10.0.0.0/24 and 10.1.0.0/24. Every real server answers a TCP connection
// and a UDP datagram with its own "addr:port".
package parity

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Step kinds.
const (
	StepIPVSAdm = "ipvsadm"
	StepTCP     = "tcp"
	StepClose   = "close"
	StepUDP     = "udp"
	StepList    = "list"
	StepCmd     = "cmd"
	StepStdin   = "stdin"
	// StepNodeExporter compares node_exporter's IPVS series (Debian's
	// prometheus-node-exporter in the director's namespace) with tunvs's.
	StepNodeExporter = "node_exporter"
	// StepKeepalived loads the stdin lines before it as a keepalived.conf
	// (keepalived itself on the kernel side, package keepalived here).
	StepKeepalived = "keepalived"
)

// NodeExporterMissing is a node_exporter step's outcome when the VM had
// no node_exporter (parity/setup.sh could not fetch it): not compared.
const NodeExporterMissing = "node_exporter: not available"

// NodeIPVSLines keeps the node_ipvs_ series of an exposition (samples and
// their HELP and TYPE lines).
func NodeIPVSLines(text string) string {
	var b strings.Builder
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "node_ipvs_") || strings.HasPrefix(l, "# HELP node_ipvs_") || strings.HasPrefix(l, "# TYPE node_ipvs_") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// Step is one line of a scenario (port ranges already expanded).
type Step struct {
	Line int
	Kind string
	Args []string       // ipvsadm's arguments
	Src  netip.AddrPort // tcp, udp, close
	Dst  netip.AddrPort // tcp, udp
	Hold bool           // tcp: keep the connection open
	// Stdin is a cmd step's standard input (the stdin lines before it).
	Stdin string
}

// Scenario is a parsed scenario file.
type Scenario struct {
	Name  string // file name without .txt
	Steps []Step
}

// Outcomes of a connection other than a real server's "addr:port".
const (
	Refused = "refused" // ECONNREFUSED: a reset or ICMP port unreachable
	Timeout = "timeout" // no answer
)

// Event is the observed outcome of one step.
type Event struct {
	Line int    `json:"line"`
	Step string `json:"step"` // the step, normalised, e.g. "tcp 10.2.0.1:1000 10.0.0.100:80 hold"
	// Outcome: for tcp/udp the real server that answered ("10.1.0.1:80"),
	// Refused, Timeout, or "error: ..."; for ipvsadm "ok" or "error"
	// (exit status only, messages differ); for list the listing; for
	// close "ok".
	Outcome string `json:"outcome"`
	Detail  string `json:"detail,omitempty"` // not compared: error text
	// Tunvs is, for live and settle steps, tunvs's listing taken in the
	// VM beside the kernel's (Outcome): both sides run there.
	Tunvs string `json:"tunvs,omitempty"`
	Ms    int64  `json:"ms,omitempty"` // not compared: how long the step took (VM)
}

// Result is one scenario's run.
type Result struct {
	Scenario string  `json:"scenario"`
	Events   []Event `json:"events"`
	Error    string  `json:"error,omitempty"` // setup failure (VM side)
	SetupMs  int64   `json:"setup_ms,omitempty"`
}

// KeepalivedOutcome is a keepalived step's outcome: the listings.
func KeepalivedOutcome(list, thresholds, tunInfo string) string {
	return "--- -L -n\n" + TrimListing(list) + "\n--- -L -n --thresholds\n" + TrimListing(thresholds) +
		"\n--- -L -n --tun-info\n" + TrimListing(tunInfo) + "\n"
}

// CmdOutcome is the outcome of a cmd step: everything ipvsadm shows.
func CmdOutcome(exit int, stdout, stderr string) string {
	return fmt.Sprintf("exit %d\n--- stdout\n%s--- stderr\n%s", exit, stdout, stderr)
}

// NeedsNetwork tells whether the scenario sends traffic (tcp or udp steps):
// only then does it need real servers, clients and VIP addresses. A
// scenario of commands alone runs in a bare director namespace, and its
// addresses may be anything (IPv6, odd forms).
func (sc *Scenario) NeedsNetwork() bool {
	for _, st := range sc.Steps {
		if st.Kind == StepTCP || st.Kind == StepUDP {
			return true
		}
	}
	return false
}

func (s Step) String() string {
	if str, ok := liveString(s); ok {
		return str
	}
	switch s.Kind {
	case StepIPVSAdm:
		return "ipvsadm " + strings.Join(s.Args, " ")
	case StepTCP:
		h := "close"
		if s.Hold {
			h = "hold"
		}
		return fmt.Sprintf("tcp %v %v %s", s.Src, s.Dst, h)
	case StepUDP:
		return fmt.Sprintf("udp %v %v", s.Src, s.Dst)
	case StepClose:
		return fmt.Sprintf("close %v", s.Src)
	case StepCmd:
		q := make([]string, len(s.Args))
		for i, a := range s.Args {
			q[i] = a
			if a == "" || strings.ContainsAny(a, " \t#'") {
				q[i] = "'" + a + "'"
			}
		}
		in := ""
		if s.Stdin != "" {
			in = fmt.Sprintf(" <<< %q", s.Stdin)
		}
		return "cmd " + strings.Join(q, " ") + in
	}
	return s.Kind
}

// ParseFile reads a scenario file.
func ParseFile(path string) (*Scenario, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(strings.TrimSuffix(filepath.Base(path), ".txt"), f)
}

// Parse reads a scenario.
func Parse(name string, r io.Reader) (*Scenario, error) {
	sc := &Scenario{Name: name}
	in := bufio.NewScanner(r)
	n := 0
	var stdin strings.Builder
	for in.Scan() {
		n++
		line := in.Text()
		bad := func(format string, a ...any) error {
			return fmt.Errorf("%s:%d: %s", name, n, fmt.Sprintf(format, a...))
		}
		if line == StepStdin {
			stdin.WriteString("\n")
			continue
		}
		if rest, ok := strings.CutPrefix(line, StepStdin+" "); ok {
			// Taken as it is: a rules line may hold anything.
			stdin.WriteString(rest + "\n")
			continue
		}
		f, err := splitWords(line)
		if err != nil {
			return nil, bad("%v", err)
		}
		if len(f) == 0 {
			continue
		}
		if f[0] != StepCmd && f[0] != StepKeepalived && f[0] != StepLive && stdin.Len() > 0 {
			return nil, bad("stdin lines must come right before a cmd, keepalived or live")
		}
		if st, ok, err := parseLive(f, &stdin); ok {
			if err != nil {
				return nil, bad("%v", err)
			}
			st.Line = n
			sc.Steps = append(sc.Steps, st)
			continue
		}
		switch f[0] {
		case StepCmd:
			sc.Steps = append(sc.Steps, Step{Line: n, Kind: StepCmd, Args: f[1:], Stdin: stdin.String()})
			stdin.Reset()
		case StepIPVSAdm:
			sc.Steps = append(sc.Steps, Step{Line: n, Kind: StepIPVSAdm, Args: f[1:]})
		case StepKeepalived:
			if len(f) != 1 || stdin.Len() == 0 {
				return nil, bad("keepalived takes no arguments; its configuration is the stdin lines before it")
			}
			sc.Steps = append(sc.Steps, Step{Line: n, Kind: StepKeepalived, Stdin: stdin.String()})
			stdin.Reset()
		case StepList, StepNodeExporter:
			if len(f) != 1 {
				return nil, bad("%s takes no arguments", f[0])
			}
			sc.Steps = append(sc.Steps, Step{Line: n, Kind: f[0]})
		case StepClose:
			if len(f) != 2 {
				return nil, bad("usage: close SRC:PORT")
			}
			srcs, err := parseSrc(f[1])
			if err != nil {
				return nil, bad("%v", err)
			}
			for _, s := range srcs {
				sc.Steps = append(sc.Steps, Step{Line: n, Kind: StepClose, Src: s})
			}
		case StepTCP, StepUDP:
			if len(f) < 3 || len(f) > 4 || (len(f) == 4 && (f[0] != StepTCP || f[3] != "close")) {
				return nil, bad("usage: tcp SRC:PORT[-PORT] VIP:PORT [close] | udp SRC:PORT[-PORT] VIP:PORT")
			}
			srcs, err := parseSrc(f[1])
			if err != nil {
				return nil, bad("%v", err)
			}
			dst, err := netip.ParseAddrPort(f[2])
			if err != nil {
				return nil, bad("%v", err)
			}
			for _, s := range srcs {
				sc.Steps = append(sc.Steps, Step{Line: n, Kind: f[0], Src: s, Dst: dst, Hold: f[0] == StepTCP && len(f) == 3})
			}
		default:
			return nil, bad("unknown step %q", f[0])
		}
	}
	if stdin.Len() > 0 {
		return nil, fmt.Errorf("%s: stdin lines at the end, with no cmd after them", name)
	}
	return sc, in.Err()
}

// splitWords splits a scenario line at blanks; '#' outside quotes starts a
// comment; 'single quotes' keep blanks and allow empty words.
func splitWords(line string) ([]string, error) {
	var out []string
	var w strings.Builder
	inWord, quoted := false, false
	for _, r := range line {
		switch {
		case quoted && r == '\'':
			quoted = false
		case quoted:
			w.WriteRune(r)
		case r == '\'':
			quoted, inWord = true, true
		case r == '#':
			if inWord {
				out = append(out, w.String())
			}
			return out, nil
		case r == ' ' || r == '\t':
			if inWord {
				out = append(out, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if quoted {
		return nil, fmt.Errorf("unterminated quote")
	}
	if inWord {
		out = append(out, w.String())
	}
	return out, nil
}

// parseSrc reads ADDR:PORT or ADDR:P1-P2.
func parseSrc(s string) ([]netip.AddrPort, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return nil, fmt.Errorf("%q: want ADDR:PORT", s)
	}
	a, err := netip.ParseAddr(strings.Trim(s[:i], "[]"))
	if err != nil {
		return nil, err
	}
	lo, hi, ok := strings.Cut(s[i+1:], "-")
	p1, err := strconv.ParseUint(lo, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("%q: bad port", s)
	}
	p2 := p1
	if ok {
		if p2, err = strconv.ParseUint(hi, 10, 16); err != nil || p2 < p1 {
			return nil, fmt.Errorf("%q: bad port range", s)
		}
	}
	var out []netip.AddrPort
	for p := p1; p <= p2; p++ {
		out = append(out, netip.AddrPortFrom(a, uint16(p)))
	}
	return out, nil
}

// RealServers returns every -r ADDR:PORT the scenario's ipvsadm steps name,
// and every VIP (-t/-u ADDR:PORT), in order of first use.
func (sc *Scenario) RealServers() (rs, vips []netip.AddrPort) {
	seenR, seenV := map[netip.AddrPort]bool{}, map[netip.AddrPort]bool{}
	for _, st := range sc.Steps {
		if st.Kind == StepServer {
			if !seenR[st.Dst] {
				seenR[st.Dst] = true
				rs = append(rs, st.Dst)
			}
			continue
		}
		if st.Kind != StepIPVSAdm {
			continue
		}
		for i := 0; i+1 < len(st.Args); i++ {
			a := st.Args[i]
			var set map[netip.AddrPort]bool
			var list *[]netip.AddrPort
			switch a {
			case "-r", "--real-server":
				set, list = seenR, &rs
			case "-t", "--tcp-service", "-u", "--udp-service":
				set, list = seenV, &vips
			default:
				continue
			}
			ap, err := netip.ParseAddrPort(st.Args[i+1])
			if err != nil || set[ap] {
				continue
			}
			set[ap] = true
			*list = append(*list, ap)
		}
	}
	return rs, vips
}

// Clients returns every client source address the scenario uses.
func (sc *Scenario) Clients() []netip.Addr {
	seen := map[netip.Addr]bool{}
	var out []netip.Addr
	for _, st := range sc.Steps {
		if (st.Kind == StepTCP || st.Kind == StepUDP) && !seen[st.Src.Addr()] {
			seen[st.Src.Addr()] = true
			out = append(out, st.Src.Addr())
		}
	}
	return out
}

// Load parses every *.txt in dir, sorted by name.
func Load(dir string) ([]*Scenario, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.txt"))
	if err != nil {
		return nil, err
	}
	var out []*Scenario
	for _, f := range files {
		sc, err := ParseFile(f)
		if err != nil {
			return nil, err
		}
		out = append(out, sc)
	}
	return out, nil
}

// TrimListing drops trailing blanks of every line and trailing empty lines.
func TrimListing(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " \t")
	}
	return strings.TrimRight(strings.Join(lines, "\n"), "\n")
}
