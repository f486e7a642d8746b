package admin

import (
	"bufio"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
)

// Names without -n. ipvsadm resolves through the C library (NSS: DNS
// included); tunvs reads /etc/hosts and /etc/services only, so that a
// listing never waits on the network. The files are read once per process
// (the daemon rereads them when they change: see namesStale).

var (
	hostsFile    = "/etc/hosts"
	servicesFile = "/etc/services"
)

type nameDB struct {
	mu      sync.Mutex
	loaded  map[string]int64 // file -> mtime at load
	byAddr  map[netip.Addr]string
	byName  map[string]netip.Addr
	portNam map[[2]string]uint16 // {name, proto} -> port
	namPort map[portKey]string
}

type portKey struct {
	port  uint16
	proto string
}

var names nameDB

func mtime(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.ModTime().UnixNano()
}

func (db *nameDB) load() {
	if db.loaded != nil && db.loaded[hostsFile] == mtime(hostsFile) && db.loaded[servicesFile] == mtime(servicesFile) {
		return
	}
	db.loaded = map[string]int64{hostsFile: mtime(hostsFile), servicesFile: mtime(servicesFile)}
	db.byAddr, db.byName = map[netip.Addr]string{}, map[string]netip.Addr{}
	db.portNam, db.namPort = map[[2]string]uint16{}, map[portKey]string{}
	eachRecord(hostsFile, func(fs []string) {
		a, err := netip.ParseAddr(fs[0])
		if err != nil || a.Zone() != "" {
			return
		}
		a = a.Unmap()
		if _, ok := db.byAddr[a]; !ok {
			db.byAddr[a] = fs[1] // gethostbyaddr's h_name: the first name
		}
		for _, n := range fs[1:] {
			if _, ok := db.byName[n]; !ok {
				db.byName[n] = a
			}
		}
	})
	eachRecord(servicesFile, func(fs []string) {
		ps, proto, ok := strings.Cut(fs[1], "/")
		n, err := strconv.ParseUint(ps, 10, 16)
		if !ok || err != nil {
			return
		}
		pk := portKey{uint16(n), proto}
		if _, ok := db.namPort[pk]; !ok {
			db.namPort[pk] = fs[0]
		}
		for _, name := range append([]string{fs[0]}, fs[2:]...) {
			k := [2]string{name, proto}
			if _, ok := db.portNam[k]; !ok {
				db.portNam[k] = uint16(n)
			}
		}
	})
}

// eachRecord calls fn with the fields of every line of an /etc/hosts-style
// file that has at least two, comments stripped. A missing or unreadable
// file has no records.
func eachRecord(path string, fn func(fields []string)) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if fs := strings.Fields(line); len(fs) >= 2 {
			fn(fs)
		}
	}
}

func protoKey(proto uint8) string {
	if proto == 17 {
		return "udp"
	}
	return "tcp"
}

func lookupHost(name string) (netip.Addr, bool) {
	names.mu.Lock()
	defer names.mu.Unlock()
	names.load()
	a, ok := names.byName[name]
	return a, ok
}

func lookupService(name string, proto uint8) (uint16, bool) {
	names.mu.Lock()
	defer names.mu.Unlock()
	names.load()
	p, ok := names.portNam[[2]string{name, protoKey(proto)}]
	return p, ok
}

// hostName is addr_to_anyname: the name from /etc/hosts, else the address.
func hostName(a netip.Addr) string {
	names.mu.Lock()
	defer names.mu.Unlock()
	names.load()
	if n, ok := names.byAddr[a]; ok {
		return n
	}
	return ntop(a)
}

// portName is port_to_anyname: the name from /etc/services, else the number.
func portName(port uint16, proto uint8) string {
	names.mu.Lock()
	defer names.mu.Unlock()
	names.load()
	if n, ok := names.namPort[portKey{port, protoKey(proto)}]; ok {
		return n
	}
	return strconv.Itoa(int(port))
}
