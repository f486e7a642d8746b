package admin

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/tunvs/tunvs/nat"
)

// TestCLI: what tunvsadm prints and the status it ends with, as ipvsadm
// 1.31 does (the cases were checked against it in the parity VM).
func TestCLI(t *testing.T) {
	env := Env{Table: nat.New(nat.Config{})}
	call := func(req Request) (Response, error) { return Serve(env, req), nil }
	for _, tc := range []struct {
		args           string
		exit           int
		stdout, stderr string
	}{
		{"-A -t 10.0.0.1:80 -s rr", 0, "", ""},
		{"-A -t 10.0.0.1:80", 255, "", "Service already exists\n"},
		{"-n -L", 255, "", "Try `ipvsadm -h' or 'ipvsadm --help' for more information.\n"},
		{"-L --foo", 255, "", "--foo: unknown option\n"},
		{"-A -t", 255, "", "-t: missing argument\n"},
		{"-L -A", 2, "", "invalid option `-A'\n"},
		{"-A -t 10.0.0.2:80 -6", 2, "", "-6 used before -f\n\n"},
		{"-L -c --stats", 2, "", "options conflicts in the list command\n"},
		{"--set 1 2", 2, "", "--set option requires 3 timeout values\n"},
		{"-v", 0, Version, ""},
		{"-L -n -t 10.0.0.9:80", 1, "", "No such service\n"},
		{"-L --timeout", 0, "Timeout (tcp tcpfin udp): 900 120 300\n", ""},
		{"-S -n", 0, "-A -t 10.0.0.1:80 -s rr\n", ""},
	} {
		var out, errb strings.Builder
		exit := CLI("ipvsadm", strings.Fields(tc.args), nil, &out, &errb, call)
		if exit != tc.exit || out.String() != tc.stdout || errb.String() != tc.stderr {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want %d, %q, %q", tc.args, exit, out.String(), errb.String(), tc.exit, tc.stdout, tc.stderr)
		}
	}
}

// TestNtop: glibc's inet_ntop forms where netip's differ.
func TestNtop(t *testing.T) {
	for in, want := range map[string]string{
		"::10.0.0.21": "::10.0.0.21", "::ffff:10.0.0.20": "::ffff:10.0.0.20", "::1": "::1", "::": "::",
		"::0.1.0.0": "::0.1.0.0", "2001:db8::1": "2001:db8::1", "::1:0:0": "::1:0:0",
	} {
		if got := ntop(netip.MustParseAddr(in)); got != want {
			t.Errorf("ntop(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestInetAton: glibc's inet_aton forms, as ipvsadm reads addresses.
func TestInetAton(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1": "10.0.0.1", "010.0.0.1": "8.0.0.1", "10.1": "10.0.0.1", "10.0.258": "10.0.1.2",
		"0x0a000002": "10.0.0.2", "167772163": "10.0.0.3", "10.0.0.8 trailing": "10.0.0.8",
		"0xffffff00": "255.255.255.0", "24": "0.0.0.24",
		"256.0.0.1": "", "10.0.0.256": "", "1.2.3.4.5": "", " 10.0.0.9": "", "": "", "10.0.0.1:80": "",
		"08.0.0.1": "", "0x": "0.0.0.0", "1.": "",
	} {
		a, ok := inetAton(in)
		got := ""
		if ok {
			got = a.String()
		}
		if got != want {
			t.Errorf("inet_aton(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"[2001:db8::1]:80": "[2001:db8::1]:80", "2001:db8::4": "[2001:db8::4]:0", "[10.0.0.22]:80": "10.0.0.22:0",
		"10.0.0.6:+80": "10.0.0.6:80", "10.0.0.5:080": "10.0.0.5:80", "10.0.0.8 :80": "10.0.0.8:80",
		"[2001:db8::6]": "", "[2001:db8::7]:": "", "10.0.0.4:0x50": "", "10.0.0.7:-80": "", "167772163": "",
		"": "", "[fe80::1%lo]:80": "", "10.0.0.13:80:90": "", "10.0.0.11:65536": "",
	} {
		a, port, _, ok := parseService(in, nat.ProtoTCP)
		got := ""
		if ok {
			got = netip.AddrPortFrom(a, port).String()
		}
		if got != want {
			t.Errorf("parse_service(%q) = %q, want %q", in, got, want)
		}
	}
}
