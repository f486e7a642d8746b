package nat

// DropReason says why a packet was dropped (or not handled). Every drop is
// counted per reason; none is logged per packet.
type DropReason uint8

// Drop reasons. The zero value means "not dropped".
const (
	DropNone            DropReason = iota
	DropTruncated                  // shorter than its headers or its stated length
	DropBadVersion                 // IP version neither 4 nor 6
	DropBadHeaderLen               // IPv4 IHL < 5 or beyond the packet, bad TCP data offset, bad IPv6 extension header length
	DropBadChecksum                // IPv4 header, or an L4 checksum where it is verified
	DropFragment                   // an IP fragment of service traffic: tunvs does not reassemble
	DropBadICMP                    // an ICMP error whose quoted packet is unusable
	DropNoDest                     // no real server available for a new connection
	DropTableFull                  // connection table at its limit: new flow refused
	DropTooBig                     // larger than the egress MTU with DF set: ICMP sent back
	DropTTL                        // TTL (hop limit) would expire on the way: ICMP time exceeded sent back
	DropDestUnavailable            // client-side packet of a connection whose real server was removed (expire_nodest_conn=0)
	DropMartian                    // to a service from a source no host may use (0/8, 127/8, multicast, broadcast, class E; ::, ::1, ff00::/8, ::ffff:0:0/96)
	DropOwnSource                  // to a service from one of the director's own addresses (VIP, DIP, local address)
	DropRoutingHeader              // IPv6 to a service with a Routing header (types 0-4)
	DropNoLocalPort                // full NAT: no local address, or no free port on any, for a new connection
	DropProxyNoRoom                // a client's first data with the PROXY protocol header would exceed an IP packet's length
	DropSynProxy                   // the SYN proxy holds back or cannot pass a segment while a real server's handshake is under way
	DropTunnelMTU                  // tunnel (-i): the route's MTU less the encapsulation is below 68 (__ip_vs_get_out_rt)
	numDropReasons
)

var dropNames = [numDropReasons]string{
	DropNone:            "none",
	DropTruncated:       "truncated",
	DropBadVersion:      "bad_version",
	DropBadHeaderLen:    "bad_header_len",
	DropBadChecksum:     "bad_checksum",
	DropFragment:        "fragment",
	DropBadICMP:         "bad_icmp",
	DropNoDest:          "no_dest",
	DropTableFull:       "table_full",
	DropTooBig:          "too_big",
	DropTTL:             "ttl_exceeded",
	DropDestUnavailable: "dest_unavailable",
	DropMartian:         "martian_source",
	DropOwnSource:       "own_source",
	DropRoutingHeader:   "routing_header",
	DropNoLocalPort:     "no_local_port",
	DropProxyNoRoom:     "proxy_no_room",
	DropSynProxy:        "synproxy",
	DropTunnelMTU:       "tunnel_mtu",
}

func (r DropReason) String() string {
	if int(r) < len(dropNames) {
		return dropNames[r]
	}
	return "unknown"
}

// DropReasons lists every reason but DropNone, in order, for reports.
func DropReasons() []DropReason {
	r := make([]DropReason, 0, numDropReasons-1)
	for i := DropReason(1); i < numDropReasons; i++ {
		r = append(r, i)
	}
	return r
}
