package bgp

import (
	"net/netip"
	"time"
)

// The director and its speaker process (tunvs-bgp) talk in JSON lines:
// the director writes a SpeakerConfig, then Commands, on the speaker's
// stdin; the speaker writes Reports on its stdout. The speaker ends when
// told to close or when its stdin ends (the director is gone).

// SpeakerConfig is the speaker's first input line.
type SpeakerConfig struct {
	AS       uint32        `json:"as"`
	RouterID netip.Addr    `json:"router_id"`
	NextHop  netip.Addr    `json:"next_hop,omitzero"`
	NextHop6 netip.Addr    `json:"next_hop6,omitzero"`
	Hold     time.Duration `json:"hold"`
	Peers    []SpeakerPeer `json:"peers"`
	// LogLevel is the director's (zerolog's numbering): the speaker
	// sends no log lines below it.
	LogLevel int8 `json:"log_level"`
}

// SpeakerPeer is one router as the speaker sees it: its loopback relay.
type SpeakerPeer struct {
	Router netip.Addr     `json:"router"` // for the logs
	AS     uint32         `json:"as"`
	Relay  netip.AddrPort `json:"relay"`
}

// Command is one instruction to the speaker.
type Command struct {
	// Op is "set" (announce exactly VIPs, withdraw the rest) or "close"
	// (withdraw everything, end the sessions with a Cease, exit).
	Op   string       `json:"op"`
	VIPs []netip.Addr `json:"vips,omitempty"`
}

// Report is one line from the speaker.
type Report struct {
	// Event is "started" or "error" (the answer to the config), "set"
	// or "closed" (the answer to a command: Announced, Err), "state" (a
	// session's state changed: Peer, State), "announce" or "withdraw"
	// (VIP, NextHop) or "log" (one of GoBGP's lines: Level, Msg,
	// Fields).
	Event     string            `json:"event"`
	Err       string            `json:"err,omitempty"`
	Announced []netip.Addr      `json:"announced,omitempty"`
	Peer      int               `json:"peer,omitempty"` // index in SpeakerConfig.Peers
	State     string            `json:"state,omitempty"`
	VIP       netip.Addr        `json:"vip,omitzero"`
	NextHop   netip.Addr        `json:"next_hop,omitzero"`
	Level     int8              `json:"level,omitempty"`
	Msg       string            `json:"msg,omitempty"`
	Fields    map[string]string `json:"fields,omitempty"`
}
