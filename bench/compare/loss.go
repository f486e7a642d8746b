//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/tunvs/tunvs/internal/netns"
)

// Where a workload lost packets: the TCP segments the client and the
// real servers retransmitted (TcpRetransSegs in each one's
// /proc/net/snmp), and the packets every host's interfaces dropped
// (each host's links' receive and transmit drops, ip -s link). A tail of
// 200 ms and more is a lost segment waiting for the retransmission
// timer (TCP_RTO_MIN); the drops say where it was lost: a TUN or TAP
// device's queue full (tun_net_xmit drops, counted as the director's
// device's transmit drops), a veth's or the backlog's.

// lossSnap is one reading of those counters.
type lossSnap struct {
	retrans float64
	drops   map[string]float64 // "host/interface": drops
}

// lossHosts are the hosts a loss snapshot reads, by name.
func (b *bed) lossHosts() map[string]*netns.Host {
	hs := map[string]*netns.Host{"client": b.client, "director": b.dir}
	for i, h := range b.rs {
		hs[fmt.Sprintf("rs%d", i+1)] = h
	}
	if b.router != nil {
		hs["router"] = b.router
	}
	if b.lan != nil {
		hs["lan"] = b.lan
	}
	return hs
}

func (b *bed) loss() (lossSnap, error) {
	s := lossSnap{drops: map[string]float64{}}
	for name, h := range b.lossHosts() {
		if h == b.client || strings.HasPrefix(name, "rs") {
			out, err := h.Run(context.Background(), "cat", "/proc/net/snmp")
			if err != nil {
				return s, err
			}
			v, err := snmpField(out, "Tcp:", "RetransSegs")
			if err != nil {
				return s, err
			}
			s.retrans += v
		}
		links, err := h.AllLinkStats()
		if err != nil {
			return s, err
		}
		for dev, l := range links {
			s.drops[name+"/"+dev] = float64(l.RX.Dropped + l.TX.Dropped)
		}
	}
	return s, nil
}

// snmpField is the value of field in the line pair of /proc/net/snmp
// whose lines start with prefix (a line of names, then one of values).
func snmpField(snmp, prefix, field string) (float64, error) {
	var names []string
	for _, l := range strings.Split(snmp, "\n") {
		if !strings.HasPrefix(l, prefix) {
			continue
		}
		f := strings.Fields(l)
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == field && i < len(f) {
				return strconv.ParseFloat(f[i], 64)
			}
		}
	}
	return 0, fmt.Errorf("/proc/net/snmp: no %s %s", prefix, field)
}

// lossDuring reads the counters now and returns what reads them again
// and records key_retrans (segments retransmitted) and key_drops
// (interface drops, all hosts), logging where the drops were.
func (b *bed) lossDuring(r *result, key string) func() {
	s0, err := b.loss()
	if err != nil {
		return func() {}
	}
	return func() {
		s, err := b.loss()
		if err != nil {
			return
		}
		var total float64
		var where []string
		for k, v := range s.drops {
			if d := v - s0.drops[k]; d > 0 {
				total += d
				where = append(where, fmt.Sprintf("%s %.0f", k, d))
			}
		}
		r.Figures[key+"_retrans"] = s.retrans - s0.retrans
		r.Figures[key+"_drops"] = total
		fmt.Fprintf(os.Stderr, "   %-15s %.0f TCP segments retransmitted, %.0f packets dropped by interfaces %v\n", key+" loss", s.retrans-s0.retrans, total, where)
	}
}
