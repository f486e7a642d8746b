package parity

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tunvs/tunvs/admin"
	"github.com/tunvs/tunvs/keepalived"
	"github.com/tunvs/tunvs/metrics"
	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
)

// tunvsRun is one scenario against a nat.Table, in process: the packets a
// client and a real server would exchange are pushed through Table.Process
// on a manual clock that advances a millisecond a packet.
type tunvsRun struct {
	t    *nat.Table
	p    nat.Packet
	now  time.Time
	held map[netip.AddrPort]heldConn
}

type heldConn struct {
	dst, rs     netip.AddrPort // VIP:port, real server
	cseq, rseq  uint32
	established bool
}

// RunTunvs runs sc against a fresh nat.Table.
func RunTunvs(sc *Scenario) Result {
	r := &tunvsRun{
		t:    nat.New(nat.Config{Seed: 1}),
		now:  time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		held: map[netip.AddrPort]heldConn{},
	}
	res := Result{Scenario: sc.Name}
	for _, st := range sc.Steps {
		ev := Event{Line: st.Line, Step: st.String()}
		switch st.Kind {
		case StepIPVSAdm:
			_, err := admin.Execute(r.t, st.Args, "")
			ev.Outcome = "ok"
			if err != nil {
				ev.Outcome, ev.Detail = "error", err.Error()
			}
		case StepCmd:
			ev.Outcome = r.cmd(st)
		case StepNodeExporter:
			var b strings.Builder
			metrics.WriteNodeIPVS(&b, r.t)
			ev.Outcome = NodeIPVSLines(b.String())
		case StepList:
			var b bytes.Buffer
			admin.List(&b, r.t, admin.FmtNumeric)
			ev.Outcome = b.String()
		case StepKeepalived:
			ev.Outcome, ev.Detail = r.keepalived(st)
		case StepServer, StepLive, StepStop, StepStart, StepSettle:
			ev.Outcome, ev.Detail = runLiveHost(st)
		case StepTCP:
			ev.Outcome, ev.Detail = r.tcp(st)
		case StepUDP:
			ev.Outcome, ev.Detail = r.udp(st)
		case StepClose:
			h, ok := r.held[st.Src]
			if !ok {
				ev.Outcome = "error: no held connection from " + st.Src.String()
				break
			}
			delete(r.held, st.Src)
			ev.Outcome = "ok"
			ev.Detail = r.closeTCP(st.Src, h)
		}
		res.Events = append(res.Events, ev)
	}
	return res
}

// cmd runs tunvsadm's main (admin.CLI) with the daemon's side of the
// control socket (admin.Serve) in process, on the manual clock.
func (r *tunvsRun) cmd(st Step) string {
	var stdout, stderr strings.Builder
	env := admin.Env{Table: r.t, Now: func() time.Time { return r.now }}
	exit := admin.CLI("ipvsadm", st.Args, strings.NewReader(st.Stdin), &stdout, &stderr,
		func(req admin.Request) (admin.Response, error) { return admin.Serve(env, req), nil })
	return CmdOutcome(exit, stdout.String(), stderr.String())
}

// send pushes one packet; it returns the verdict and, for a forwarded
// client packet, the real server it went to.
func (r *tunvsRun) send(b []byte) (nat.Result, netip.AddrPort) {
	r.now = r.now.Add(time.Millisecond)
	res := r.t.Process(b, &r.p, r.now.UnixNano())
	var to netip.AddrPort
	if res.Verdict == nat.Forward {
		to = netip.AddrPortFrom(r.p.Dst(), r.p.DstPort)
	}
	return res, to
}

func (r *tunvsRun) tcpSeg(src, dst netip.AddrPort, flags uint8, seq, ack uint32, payload []byte) []byte {
	return nattest.Build(nattest.Seg{Src: src, Dst: dst, Proto: nat.ProtoTCP, Flags: flags, Seq: seq, Ack: ack, Payload: payload})
}

// noConn maps a first packet that was not forwarded to what the client
// sees, as the kernel director would answer it.
func noConn(res nat.Result) (string, string) {
	switch {
	case res.Verdict == nat.Drop && res.Unreachable:
		// ip_vs_leave: ICMP port unreachable -> ECONNREFUSED.
		return Refused, res.Reason.String()
	case res.Verdict == nat.Pass:
		// Not a virtual service (or none any more): the director's own
		// stack owns the VIP and answers a SYN with a reset, a datagram
		// with a port unreachable.
		return Refused, "pass to the local stack"
	case res.Verdict == nat.Drop:
		return Timeout, res.Reason.String()
	}
	return fmt.Sprintf("error: verdict %d", res.Verdict), ""
}

func (r *tunvsRun) tcp(st Step) (string, string) {
	c, v := st.Src, st.Dst
	const cisn, risn = 1000, 5000
	res, rs := r.send(r.tcpSeg(c, v, nattest.SYN, cisn, 0, nil))
	if res.Verdict != nat.Forward {
		return noConn(res)
	}
	steps := []struct {
		fromRS bool
		flags  uint8
		seq    uint32
		ack    uint32
		data   []byte
	}{
		{true, nattest.SYN | nattest.ACK, risn, cisn + 1, nil},
		{false, nattest.ACK, cisn + 1, risn + 1, nil},
		// The server's greeting (its name), and the client's ACK.
		{true, nattest.PSH | nattest.ACK, risn + 1, cisn + 1, []byte(rs.String() + "\n")},
		{false, nattest.ACK, cisn + 1, risn + 1 + uint32(len(rs.String())+1), nil},
	}
	for _, s := range steps {
		b := r.tcpSeg(c, v, s.flags, s.seq, s.ack, s.data)
		if s.fromRS {
			b = r.tcpSeg(rs, c, s.flags, s.seq, s.ack, s.data)
		}
		if res, _ := r.send(b); res.Verdict != nat.Forward {
			return "error: handshake packet not forwarded: " + res.Reason.String(), ""
		}
	}
	h := heldConn{dst: v, rs: rs, cseq: cisn + 1, rseq: risn + 1 + uint32(len(rs.String())+1), established: true}
	if st.Hold {
		r.held[c] = h
		return rs.String(), ""
	}
	return rs.String(), r.closeTCP(c, h)
}

// closeTCP: client FIN, server ACK, server FIN, client ACK (the orderly
// close ipvsrun does: CloseWrite, the server closes on EOF).
func (r *tunvsRun) closeTCP(c netip.AddrPort, h heldConn) string {
	pk := [][]byte{
		r.tcpSeg(c, h.dst, nattest.FIN|nattest.ACK, h.cseq, h.rseq, nil),
		r.tcpSeg(h.rs, c, nattest.ACK, h.rseq, h.cseq+1, nil),
		r.tcpSeg(h.rs, c, nattest.FIN|nattest.ACK, h.rseq, h.cseq+1, nil),
		r.tcpSeg(c, h.dst, nattest.ACK, h.cseq+1, h.rseq+1, nil),
	}
	for _, b := range pk {
		if res, _ := r.send(b); res.Verdict != nat.Forward {
			return "close packet not forwarded: " + res.Reason.String()
		}
	}
	return ""
}

func (r *tunvsRun) udp(st Step) (string, string) {
	res, rs := r.send(nattest.UDP(st.Src, st.Dst, []byte("hello\n")))
	if res.Verdict != nat.Forward {
		return noConn(res)
	}
	if res, _ := r.send(nattest.UDP(rs, st.Src, []byte(rs.String()+"\n"))); res.Verdict != nat.Forward {
		return "error: reply not forwarded: " + res.Reason.String(), ""
	}
	return rs.String(), ""
}

// keepalived loads the step's keepalived.conf into the table as tunvs run
// --keepalived-conf does (the checks are not run: the scenarios' checkers
// are ones that pass), and lists it as KeepalivedOutcome.
func (r *tunvsRun) keepalived(st Step) (string, string) {
	kc, err := loadKeepalived(st.Stdin)
	if err != nil {
		return "error: " + err.Error(), ""
	}
	if err := r.t.Apply(r.t.Rules().Diff(kc.Rules)); err != nil {
		return "error: " + err.Error(), ""
	}
	var l, th, tun bytes.Buffer
	admin.List(&l, r.t, admin.FmtNumeric)
	admin.List(&th, r.t, admin.FmtNumeric|admin.FmtThresholds)
	admin.List(&tun, r.t, admin.FmtNumeric|admin.FmtTunInfo)
	return KeepalivedOutcome(l.String(), th.String(), tun.String()), fmt.Sprint(kc.Warnings)
}

// loadKeepalived reads a step's keepalived.conf text as tunvs run
// --keepalived-conf reads the file.
func loadKeepalived(text string) (keepalived.Config, error) {
	dir, err := os.MkdirTemp("", "parity-keepalived")
	if err != nil {
		return keepalived.Config{}, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "keepalived.conf")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		return keepalived.Config{}, err
	}
	return keepalived.Load(path, keepalived.Options{})
}
