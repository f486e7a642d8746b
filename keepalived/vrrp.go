package keepalived

import (
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tunvs/tunvs/rules"
	"github.com/tunvs/tunvs/vrrp"
)

// VRRPInstance is a vrrp_instance tunvs runs: the virtual router, and
// the sync daemon it drives if lvs_sync_daemon (global_defs) or
// lvs_sync_daemon_interface names it.
type VRRPInstance struct {
	Router vrrp.Config
	Sync   *rules.SyncDaemon
}

// keepalived's VRRP defaults (vrrp_data.c alloc_vrrp, global_data.c).
const (
	defaultPriority    = 100
	defaultVRRPVersion = 2
)

// globalDefs reads what tunvs uses of global_defs: vrrp_version and
// lvs_sync_daemon; the rest is a warning.
func (m *mapper) globalDefs(s stmt) error {
	var other []string
	for _, k := range s.block {
		switch k.key() {
		case "vrrp_version":
			v, err := number(k, 2, 3)
			if err != nil {
				return err
			}
			m.vrrpVersion = v
		case "lvs_sync_daemon":
			// lvs_sync_daemon <INTERFACE> <VRRP_INSTANCE> [id <SYNC_ID>]
			// [maxlen <LEN>] [port <PORT>] [ttl <TTL>] [group <IP ADDR>]
			if len(k.words) < 3 {
				return errAt(k.Pos, "lvs_sync_daemon: want an interface and a vrrp_instance")
			}
			sd := &rules.SyncDaemon{Interface: k.arg(1)}
			syncID := -1
			for i := 3; i < len(k.words); i += 2 {
				if i+1 >= len(k.words) {
					return errAt(k.Pos, "lvs_sync_daemon: %s needs a value", k.words[i])
				}
				v := k.words[i+1]
				n, nerr := strconv.Atoi(v)
				bad := func(lo, hi int) bool { return nerr != nil || n < lo || n > hi }
				switch k.words[i] {
				case "id":
					if bad(0, 255) {
						return errAt(k.Pos, "lvs_sync_daemon: id %q: want 0 to 255", v)
					}
					syncID = n
				case "maxlen":
					if bad(1, rules.MaxSyncMaxLen) {
						return errAt(k.Pos, "lvs_sync_daemon: maxlen %q", v)
					}
					sd.MaxLen = n
				case "port":
					if bad(1, 65535) {
						return errAt(k.Pos, "lvs_sync_daemon: port %q", v)
					}
					sd.Port = uint16(n)
				case "ttl":
					if bad(1, 255) {
						return errAt(k.Pos, "lvs_sync_daemon: ttl %q", v)
					}
					sd.TTL = uint8(n)
				case "group":
					a, err := netip.ParseAddr(v)
					if err != nil || !a.IsMulticast() {
						return errAt(k.Pos, "lvs_sync_daemon: group %q is not a multicast address", v)
					}
					sd.Group = a
				default:
					return errAt(k.Pos, "lvs_sync_daemon: unknown option %q (id, maxlen, port, ttl, group)", k.words[i])
				}
			}
			m.syncd = &globalSync{Pos: k.Pos, sd: sd, instance: k.arg(2), id: syncID}
		default:
			other = append(other, k.key())
		}
	}
	if len(other) > 0 || len(s.block) == 0 {
		m.warnf(s.Pos, "global_defs: %s ignored (notifications, router id, process settings: tunvs has none)", strings.Join(other, ", "))
	}
	return nil
}

type globalSync struct {
	Pos
	sd       *rules.SyncDaemon
	instance string
	id       int // -1: the instance's virtual_router_id, as keepalived
}

// vrrpInstance maps a vrrp_instance. What tunvs cannot run makes the
// instance a warning, not an error, so that a file written for a kernel
// keepalived still loads; tunvs run refuses an instance on an interface
// it does not have.
func (m *mapper) vrrpInstance(s stmt) error {
	name := s.arg(1)
	c := vrrp.Config{Name: name, Priority: defaultPriority, Preempt: true}
	var sync *rules.SyncDaemon
	version := 0
	var ignored []string
	for _, k := range s.block {
		switch k.key() {
		case "state":
			switch k.arg(1) {
			case "MASTER":
				c.StartMaster = true
			case "BACKUP":
			default:
				return errAt(k.Pos, "state %q: MASTER or BACKUP", k.arg(1))
			}
		case "interface":
			c.Link = k.arg(1)
		case "virtual_router_id":
			n, err := number(k, 1, 255)
			if err != nil {
				return err
			}
			c.VRID = uint8(n)
		case "priority":
			n, err := number(k, 1, 255)
			if err != nil {
				return err
			}
			c.Priority = uint8(n)
		case "advert_int":
			d, err := timer(k)
			if err != nil {
				return err
			}
			// keepalived rounds to centiseconds for version 3.
			c.Interval = d.Round(10 * time.Millisecond)
		case "nopreempt":
			c.Preempt = false
		case "preempt":
			c.Preempt = true
		case "preempt_delay":
			d, err := timer(k)
			if err != nil {
				return err
			}
			c.PreemptDelay = d
		case "version":
			n, err := number(k, 2, 3)
			if err != nil {
				return err
			}
			version = n
		case "lvs_sync_daemon_interface":
			sync = &rules.SyncDaemon{Interface: k.arg(1)}
		case "virtual_ipaddress":
			for _, a := range k.block {
				p, err := vipPrefix(a)
				if err != nil {
					return err
				}
				if dev := devOf(a); dev != "" && c.Link != "" && dev != c.Link {
					return errAt(a.Pos, "virtual_ipaddress %s dev %s: tunvs puts the virtual addresses on the instance's interface %s", a.key(), dev, c.Link)
				}
				c.VIPs = append(c.VIPs, p)
			}
		case "authentication":
			m.warnf(k.Pos, "vrrp_instance %s: authentication ignored (VRRP version 3 has none)", name)
		case "use_vmac", "vmac_xmit_base":
			m.warnf(k.Pos, "vrrp_instance %s: %s ignored: tunvs always sends from the virtual MAC while master", name, k.key())
		case "unicast_peer", "unicast_src_ip", "mcast_src_ip":
			m.warnf(s.Pos, "vrrp_instance %s ignored: %s: tunvs speaks multicast VRRP from the interface's primary address only", name, k.key())
			return nil
		default:
			ignored = append(ignored, k.key())
		}
	}
	if len(ignored) > 0 {
		m.warnf(s.Pos, "vrrp_instance %s: %s ignored (not supported by tunvs)", name, strings.Join(ignored, ", "))
	}
	if c.Link == "" || c.VRID == 0 || len(c.VIPs) == 0 {
		m.warnf(s.Pos, "vrrp_instance %s ignored: it needs an interface, a virtual_router_id and a virtual_ipaddress", name)
		return nil
	}
	if version == 0 {
		version = m.vrrpVersion
	}
	if c.VIPs[0].Addr().Is4() && version == defaultVRRPVersion {
		// IPv6 instances are always version 3 in keepalived.
		m.warnf(s.Pos, "vrrp_instance %s: tunvs speaks VRRP version 3 only: set vrrp_version 3 (global_defs) on keepalived peers, whose default is 2", name)
	}
	if err := c.Validate(); err != nil {
		return errAt(s.Pos, "%v", err)
	}
	if sync != nil {
		sync.SyncID = c.VRID
	}
	m.vrrp = append(m.vrrp, VRRPInstance{Router: c, Sync: sync})
	m.vrrpPos = append(m.vrrpPos, s.Pos)
	return nil
}

// linkSync attaches global_defs' lvs_sync_daemon to its instance.
func (m *mapper) linkSync() error {
	g := m.syncd
	if g == nil {
		return nil
	}
	for i := range m.vrrp {
		v := &m.vrrp[i]
		if v.Router.Name != g.instance {
			continue
		}
		sd := *g.sd
		sd.SyncID = v.Router.VRID
		if g.id >= 0 {
			sd.SyncID = uint8(g.id)
		}
		v.Sync = &sd
		return nil
	}
	return errAt(g.Pos, "lvs_sync_daemon: no vrrp_instance %s that tunvs runs", g.instance)
}

// vipPrefix reads a virtual_ipaddress line's address: ADDR[/LEN], a host
// prefix without a length, as ip addr add takes it.
func vipPrefix(a stmt) (netip.Prefix, error) {
	w := a.key()
	if strings.Contains(w, "/") {
		p, err := netip.ParsePrefix(w)
		if err != nil {
			return p, errAt(a.Pos, "virtual_ipaddress %q: %v", w, err)
		}
		return p, nil
	}
	ad, err := netip.ParseAddr(w)
	if err != nil || ad.Zone() != "" {
		return netip.Prefix{}, errAt(a.Pos, "virtual_ipaddress %q is not an address", w)
	}
	return netip.PrefixFrom(ad, ad.BitLen()), nil
}

// devOf is a virtual_ipaddress line's "dev NAME", or "".
func devOf(a stmt) string {
	for i := 1; i+1 < len(a.words); i++ {
		if a.words[i] == "dev" {
			return a.words[i+1]
		}
	}
	return ""
}
