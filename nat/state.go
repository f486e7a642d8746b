package nat

import (
	"time"

	"github.com/tunvs/tunvs/rules"
)

// State is an IPVS connection state. TCP uses the kernel's table of states;
// UDP connections are always StateUDP.
type State uint8

// IPVS TCP states, in the kernel's order (IP_VS_TCP_S_*).
const (
	StateNone State = iota
	StateEstablished
	StateSynSent
	StateSynRecv
	StateFinWait
	StateTimeWait
	StateClose
	StateCloseWait
	StateLastAck
	StateListen
	StateSynAck
	numTCPStates
	// StateUDP is the only state of a UDP connection.
	StateUDP  = numTCPStates
	numStates = StateUDP + 1
)

// StateAssured is the state of a persistence template that has seen a
// controlled connection established (IP_VS_CTPL_S_ASSURED); other
// templates are StateNone. It has no timeout of its own.
const StateAssured State = 0x80

// stateNames are the rules package's: the names timeouts are set by. (A
// different number of states does not compile.)
var stateNames [numStates]string = rules.StateNames

// String is the name ipvsadm -Lnc prints.
func (s State) String() string {
	if s < numStates {
		return stateNames[s]
	}
	if s == StateAssured {
		return "ASSURED"
	}
	return "ERR!"
}

// active reports whether a connection in this state counts as active
// (ActiveConn) rather than inactive, as the kernel's tcp_state_active_table.
func (s State) active() bool {
	switch s {
	case StateEstablished, StateSynSent, StateSynRecv, StateSynAck:
		return true
	}
	return false
}

// Timeouts holds the timeout of each state. The zero value of an entry
// means the default.
type Timeouts [numStates]time.Duration

// DefaultTimeouts are the kernel's defaults (ip_vs_proto_tcp.c tcp_timeouts,
// ip_vs_proto_udp.c udp_timeouts): what `ipvsadm --set` shows as
// "900 120 300".
var DefaultTimeouts = Timeouts{
	StateNone:        2 * time.Second,
	StateEstablished: 15 * time.Minute,
	StateSynSent:     2 * time.Minute,
	StateSynRecv:     1 * time.Minute,
	StateFinWait:     2 * time.Minute,
	StateTimeWait:    2 * time.Minute,
	StateClose:       10 * time.Second,
	StateCloseWait:   60 * time.Second,
	StateLastAck:     30 * time.Second,
	StateListen:      2 * time.Minute,
	StateSynAck:      2 * time.Minute,
	StateUDP:         5 * time.Minute,
}

// withDefaults fills zero entries from DefaultTimeouts.
func (t Timeouts) withDefaults() Timeouts {
	for i := range t {
		if t[i] <= 0 {
			t[i] = DefaultTimeouts[i]
		}
	}
	return t
}

// tcpDir selects a third of the transition table, as the kernel's
// tcp_state_off: client-to-server packets are INPUT, server-to-client
// OUTPUT; INPUT-ONLY is for the client's packets of a direct-routing
// connection that has seen nothing of its server (IP_VS_CONN_F_NOOUTPUT).
type tcpDir uint8

const (
	tcpInput     tcpDir = 0
	tcpOutput    tcpDir = 1
	tcpInputOnly tcpDir = 2
)

// tcp flag bits as in the TCP header.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// tcpEvent orders the flags as the kernel's tcp_state_idx: RST wins over
// SYN, SYN over FIN, FIN over ACK. -1: none of them (the state goes to
// CLOSE, as in the kernel).
func tcpEvent(flags uint8) int {
	switch {
	case flags&tcpRST != 0:
		return 3
	case flags&tcpSYN != 0:
		return 0
	case flags&tcpFIN != 0:
		return 1
	case flags&tcpACK != 0:
		return 2
	}
	return -1
}

const (
	sNO = StateNone
	sES = StateEstablished
	sSS = StateSynSent
	sSR = StateSynRecv
	sFW = StateFinWait
	sTW = StateTimeWait
	sCL = StateClose
	sCW = StateCloseWait
	sLA = StateLastAck
	sLI = StateListen
	sSA = StateSynAck
)

// tcpStates is the kernel's tcp_states table (not the secure_tcp one):
// [direction][event][current state] -> next state.
var tcpStates = [3][4][numTCPStates]State{
	tcpInput: {
		//   sNO  sES  sSS  sSR  sFW  sTW  sCL  sCW  sLA  sLI  sSA
		{sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSR}, // syn
		{sCL, sCW, sSS, sTW, sTW, sTW, sCL, sCW, sLA, sLI, sTW}, // fin
		{sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES}, // ack
		{sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sSR}, // rst
	},
	tcpOutput: {
		{sSS, sES, sSS, sSR, sSS, sSS, sSS, sSS, sSS, sLI, sSR}, // syn
		{sTW, sFW, sSS, sTW, sFW, sTW, sCL, sTW, sLA, sLI, sTW}, // fin
		{sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sLA, sES, sES}, // ack
		{sCL, sCL, sSS, sCL, sCL, sTW, sCL, sCL, sCL, sCL, sCL}, // rst
	},
	tcpInputOnly: {
		{sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSR}, // syn
		{sCL, sFW, sSS, sTW, sFW, sTW, sCL, sCW, sLA, sLI, sTW}, // fin
		{sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES}, // ack
		{sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sCL}, // rst
	},
}

// tcpStatesDOS is the kernel's tcp_states_dos, the table secure_tcp
// switches to (tcp_timeout_change): a client's ACK no longer takes a
// SYN_RECV connection to ESTABLISHED, only the real server's answer does
// (OUTPUT); a SYN on SYN_RECV or SYNACK goes to SYNACK. A spoofed
// handshake then never earns ESTABLISHED's 15-minute timeout.
var tcpStatesDOS = [3][4][numTCPStates]State{
	tcpInput: {
		//   sNO  sES  sSS  sSR  sFW  sTW  sCL  sCW  sLA  sLI  sSA
		{sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSA}, // syn
		{sCL, sCW, sSS, sTW, sTW, sTW, sCL, sCW, sLA, sLI, sSA}, // fin
		{sES, sES, sSS, sSR, sFW, sTW, sCL, sCW, sCL, sLI, sSA}, // ack
		{sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sCL}, // rst
	},
	tcpOutput: {
		{sSS, sES, sSS, sSA, sSS, sSS, sSS, sSS, sSS, sLI, sSA}, // syn
		{sTW, sFW, sSS, sTW, sFW, sTW, sCL, sTW, sLA, sLI, sTW}, // fin
		{sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sLA, sES, sES}, // ack
		{sCL, sCL, sSS, sCL, sCL, sTW, sCL, sCL, sCL, sCL, sCL}, // rst
	},
	tcpInputOnly: {
		{sSA, sES, sES, sSR, sSA, sSA, sSA, sSA, sSA, sSA, sSA}, // syn
		{sCL, sFW, sSS, sTW, sFW, sTW, sCL, sCW, sLA, sLI, sTW}, // fin
		{sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES}, // ack
		{sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sCL}, // rst
	},
}

// nextTCPState is the kernel's set_tcp_state transition for one packet,
// in the secure_tcp table when dos is set.
func nextTCPState(cur State, dir tcpDir, flags uint8, dos bool) State {
	ev := tcpEvent(flags)
	if ev < 0 || cur >= numTCPStates {
		return StateClose
	}
	if dos {
		return tcpStatesDOS[dir][ev][cur]
	}
	return tcpStates[dir][ev][cur]
}

// StateNames lists the state names, TCP's then UDP.
func StateNames() []string { return append([]string(nil), stateNames[:]...) }
