package nat

// The connection's egress MTUs (Conn.mtu): both directions in one word,
// so that the router can change one while packets are checked against
// the other, without a lock and without making the entry larger.

// initMTU sets the MTUs of a connection not yet published.
func (c *Conn) initMTU(in, out int) {
	c.mtu.Store(uint32(mtu16(in)) | uint32(mtu16(out))<<16)
}

// egressMTU is the MTU dir's packets are checked against, 0 for none.
func (c *Conn) egressMTU(dir Dir) int { return int(uint16(c.mtu.Load() >> (16 * uint(dir)))) }

// SetEgressMTU sets the MTU of the route dir's packets now leave by, for
// the router to call when it finds the connection's route changed: the
// kernel checks every packet against the MTU of the route it takes
// (__ip_vs_get_out_rt, which ip_vs_nat_xmit calls per packet, checks
// dst_mtu of the route it returns, net/netfilter/ipvs/ip_vs_xmit.c; the
// replies, forwarded, are checked by ip_forward against theirs,
// net/ipv4/ip_forward.c). 0 checks nothing.
func (c *Conn) SetEgressMTU(dir Dir, mtu int) {
	shift := 16 * uint(dir)
	for {
		old := c.mtu.Load()
		nw := old&^(0xffff<<shift) | uint32(mtu16(mtu))<<shift
		if nw == old || c.mtu.CompareAndSwap(old, nw) {
			return
		}
	}
}
