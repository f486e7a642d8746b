package health

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tunvs/tunvs/nat"
)

// Syntax is the text form of a check rule, one per line of a rules file
// (after the ipvsadm lines) or per --check flag:
//
//	--check -t|-u VIP:PORT [-r RIP[:PORT]] [KIND] [KEY=VALUE | FLAG]...
//
// Without -r the line sets the service's defaults and options; with -r it
// sets one real server's check, which takes the service's defaults for
// whatever it does not say. "--check" itself may be left out.
//
// KIND is tcp, http, https, udp, ping, misc, or none (do not check this
// server). Keys:
//
//	interval=2s timeout=1s fall=3 rise=2 warmup=5s   durations also as seconds: interval=2
//	port=8080           check this port instead of the server's (connect_port)
//	alpha               start down until rise checks pass
//	path=/health host=www.example.com status=200-299,301
//	digest=md5:HEX | sha256:HEX | HEX (32 digits: MD5, keepalived's; 64: SHA-256)
//	contains=TEXT       the body must contain it
//	send=TEXT expect=TEXT (udp; hex:0a0b... for bytes)
//	cmd="/usr/local/bin/check --x" dynamic (misc; run by /bin/sh -c on the machine)
//
// and, on service lines only:
//
//	on-fail=inhibit|remove  sorry=ADDR:PORT sorry-weight=1 quorum=1 hysteresis=0
//	expire              drop a failed server's connections at once
//
// Values may be quoted with ' or ". A # starts a comment.
const Syntax = "--check -t|-u VIP:PORT [-r RIP[:PORT]] [KIND] [KEY=VALUE]..."

// LineError is a parse error with its line.
type LineError struct {
	Line int    // 1-based; for flags, the flag's position
	Text string // the line
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// Parse reads check rules, one per line; blank lines and lines starting
// with # are skipped.
func Parse(r io.Reader) (Config, error) {
	var p Parser
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		if err := p.Line(sc.Text()); err != nil {
			return Config{}, &LineError{Line: n, Text: sc.Text(), Err: err}
		}
	}
	if err := sc.Err(); err != nil {
		return Config{}, err
	}
	return p.Config(), nil
}

// ParseLines parses rules given one per string (--check flags); errors
// name the position, 1-based.
func ParseLines(lines []string) (Config, error) {
	var p Parser
	for i, l := range lines {
		if err := p.Line(l); err != nil {
			return Config{}, &LineError{Line: i + 1, Text: l, Err: err}
		}
	}
	return p.Config(), nil
}

// Parser builds a Config from lines of several sources (a rules file,
// then --check flags), each line's error for the caller to place.
type Parser struct{ b builder }

// Line parses one rule (blank and comment lines are fine).
func (p *Parser) Line(line string) error { return p.b.line(line) }

// LineAt is Line for line n of a rules file: the services and servers it
// names remember n, for the errors of rules.Rules.Validate.
func (p *Parser) LineAt(n int, line string) error {
	p.b.lineNo = n
	defer func() { p.b.lineNo = 0 }()
	return p.b.line(line)
}

// Config is what the lines so far configure.
func (p *Parser) Config() Config { return p.b.cfg }

// SplitRules separates the check rules (lines starting with --check) of a
// rules file from its ipvsadm lines. Each result has as many lines as the
// input, the other's lines left blank, so line numbers in errors stay
// those of the file.
func SplitRules(data string) (ipvsadm, checks string) {
	var a, c strings.Builder
	for _, l := range strings.SplitAfter(data, "\n") {
		nl := ""
		if strings.HasSuffix(l, "\n") {
			nl = "\n"
		}
		if IsCheckLine(l) {
			c.WriteString(l)
			a.WriteString(nl)
		} else {
			a.WriteString(l)
			c.WriteString(nl)
		}
	}
	return a.String(), c.String()
}

// IsCheckLine tells a check rule from an ipvsadm line in a mixed rules
// file.
func IsCheckLine(line string) bool {
	f := strings.Fields(line)
	return len(f) > 0 && f[0] == "--check"
}

type builder struct {
	cfg Config
	// lineNo is the rules file line being read (0: not from a file).
	lineNo int
}

func (b *builder) service(proto uint8, vip netip.AddrPort) *ServiceConfig {
	for i := range b.cfg.Services {
		s := &b.cfg.Services[i]
		if s.Proto == proto && s.VIP == vip {
			return s
		}
	}
	b.cfg.Services = append(b.cfg.Services, ServiceConfig{Proto: proto, VIP: vip, Line: b.lineNo})
	return &b.cfg.Services[len(b.cfg.Services)-1]
}

func (b *builder) line(line string) error {
	toks, err := tokenize(line)
	if err != nil {
		return err
	}
	if len(toks) == 0 {
		return nil
	}
	if toks[0] == "--check" {
		toks = toks[1:]
	}
	var (
		proto     uint8
		vip       netip.AddrPort
		server    netip.AddrPort
		hasServer bool
		check     Check
		hasCheck  bool
		svcOpts   []string
	)
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		switch t {
		case "-t", "--tcp-service", "-u", "--udp-service", "-r", "--real-server":
			if i+1 >= len(toks) {
				return fmt.Errorf("%s needs an address", t)
			}
			i++
			v := toks[i]
			if t == "-r" || t == "--real-server" {
				if hasServer {
					return errors.New("more than one -r")
				}
				ap, err := parseServer(v)
				if err != nil {
					return err
				}
				server, hasServer = ap, true
				continue
			}
			if proto != 0 {
				return errors.New("more than one service")
			}
			ap, err := netip.ParseAddrPort(v)
			if err != nil || ap.Addr().Zone() != "" {
				return fmt.Errorf("service %q: want ADDR:PORT", v)
			}
			vip, proto = ap, nat.ProtoTCP
			if t == "-u" || t == "--udp-service" {
				proto = nat.ProtoUDP
			}
			continue
		}
		if k := Kind(t); k.Valid() {
			if check.Kind != "" {
				return fmt.Errorf("two check kinds: %s and %s", check.Kind, k)
			}
			check.Kind, hasCheck = k, true
			continue
		}
		key, val, hasVal := strings.Cut(t, "=")
		switch key {
		case "on-fail", "sorry", "sorry-weight", "quorum", "hysteresis", "expire":
			svcOpts = append(svcOpts, t)
			continue
		}
		if err := setCheck(&check, key, val, hasVal); err != nil {
			return err
		}
		hasCheck = true
	}
	if proto == 0 {
		return errors.New("no service (-t or -u VIP:PORT)")
	}
	if hasServer && server.Addr().Is4() != vip.Addr().Is4() {
		return fmt.Errorf("real server %v is not of the service's address family", server.Addr())
	}
	if hasServer && server.Port() == 0 {
		// As ipvsadm: -r without a port takes the service's.
		server = netip.AddrPortFrom(server.Addr(), vip.Port())
	}
	s := b.service(proto, vip)
	if hasServer {
		if len(svcOpts) > 0 {
			return fmt.Errorf("%s is a service option: give it on a line without -r", svcOpts[0])
		}
		for _, sv := range s.Servers {
			if sv.Addr == server {
				return fmt.Errorf("real server %v already has a check", server)
			}
		}
		c := check
		if c.Kind == "" && !hasCheck {
			return errors.New("no check for the real server (a kind, e.g. tcp, or options)")
		}
		s.Servers = append(s.Servers, ServerConfig{Addr: server, Check: &c, Line: b.lineNo})
		return nil
	}
	for _, o := range svcOpts {
		if err := setService(s, o); err != nil {
			return err
		}
	}
	if hasCheck {
		if s.Default != nil {
			return errors.New("the service already has a default check")
		}
		if check.Kind == "" {
			return errors.New("check options without a kind (tcp, http, https, udp, ping, misc)")
		}
		c := check
		s.Default = &c
	}
	if !hasCheck && len(svcOpts) == 0 {
		return errors.New("nothing to set")
	}
	return nil
}

func parseServer(v string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(v); err == nil && ap.Addr().Zone() == "" {
		return ap, nil
	}
	a, err := netip.ParseAddr(strings.Trim(v, "[]"))
	if err != nil || a.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("real server %q: want ADDR[:PORT]", v)
	}
	return netip.AddrPortFrom(a, 0), nil
}

func parseDuration(key, v string) (time.Duration, error) {
	if d, err := time.ParseDuration(v); err == nil {
		if d < 0 {
			return 0, fmt.Errorf("%s=%s: negative", key, v)
		}
		return d, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || f > 1e6 {
		return 0, fmt.Errorf("%s=%s: want a duration (2s, 500ms) or seconds", key, v)
	}
	return time.Duration(f * float64(time.Second)), nil
}

func parseCount(key, v string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%s=%s: want a number from %d to %d", key, v, lo, hi)
	}
	return n, nil
}

func parseBytes(v string) ([]byte, error) {
	if h, ok := strings.CutPrefix(v, "hex:"); ok {
		b, err := hex.DecodeString(h)
		if err != nil {
			return nil, fmt.Errorf("hex %q: %v", h, err)
		}
		return b, nil
	}
	return []byte(v), nil
}

func setCheck(c *Check, key, val string, hasVal bool) error {
	need := func() error {
		if !hasVal || val == "" {
			return fmt.Errorf("%s needs a value (%s=...)", key, key)
		}
		return nil
	}
	var err error
	switch key {
	case "alpha", "dynamic":
		on := true
		if hasVal {
			if on, err = strconv.ParseBool(val); err != nil {
				return fmt.Errorf("%s=%s: want true or false", key, val)
			}
		}
		if key == "alpha" {
			c.StartDown = on
		} else {
			c.Dynamic = on
		}
		return nil
	}
	if !hasVal && !isKey(key) {
		return fmt.Errorf("unknown check kind or option %q", key)
	}
	if err := need(); err != nil {
		return err
	}
	switch key {
	case "interval":
		c.Interval, err = parseDuration(key, val)
		if err == nil && c.Interval == 0 {
			err = errors.New("interval=0")
		}
	case "timeout":
		c.Timeout, err = parseDuration(key, val)
		if err == nil && c.Timeout == 0 {
			err = errors.New("timeout=0")
		}
	case "warmup":
		c.Warmup, err = parseDuration(key, val)
	case "fall":
		c.Fall, err = parseCount(key, val, 1, 1000)
	case "rise":
		c.Rise, err = parseCount(key, val, 1, 1000)
	case "port":
		var p int
		p, err = parseCount(key, val, 1, 65535)
		c.Port = uint16(p)
	case "path":
		if val[0] != '/' {
			err = fmt.Errorf("path=%s: must start with /", val)
		}
		c.Path = val
	case "host":
		c.VHost = val
	case "status":
		c.Status, err = parseStatus(val)
	case "digest":
		c.DigestAlg, c.Digest, err = parseDigest(val)
	case "contains":
		c.Contains = val
	case "send":
		c.Payload, err = parseBytes(val)
	case "expect":
		c.Expect, err = parseBytes(val)
	case "cmd":
		c.Command = val
	default:
		return fmt.Errorf("unknown option %q", key)
	}
	return err
}

func isKey(k string) bool {
	switch k {
	case "interval", "timeout", "warmup", "fall", "rise", "port", "path", "host", "status", "digest",
		"contains", "send", "expect", "cmd":
		return true
	}
	return false
}

func parseStatus(v string) ([]StatusRange, error) {
	var out []StatusRange
	for _, part := range strings.Split(v, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		if !isRange {
			hi = lo
		}
		l, err1 := strconv.Atoi(lo)
		h, err2 := strconv.Atoi(hi)
		if err1 != nil || err2 != nil || l < 100 || h > 999 || l > h {
			return nil, fmt.Errorf("status=%s: want codes or ranges like 200-299,301", v)
		}
		out = append(out, StatusRange{Lo: l, Hi: h})
	}
	return out, nil
}

func parseDigest(v string) (string, []byte, error) {
	alg, h, has := strings.Cut(v, ":")
	if !has {
		h = alg
		switch len(h) {
		case 32:
			alg = DigestMD5
		case 64:
			alg = DigestSHA256
		default:
			return "", nil, fmt.Errorf("digest=%s: want md5:HEX, sha256:HEX or 32/64 hex digits", v)
		}
	}
	alg = strings.ToLower(alg)
	b, err := hex.DecodeString(h)
	switch {
	case err != nil:
		return "", nil, fmt.Errorf("digest=%s: not hex", v)
	case alg == DigestMD5 && len(b) == 16, alg == DigestSHA256 && len(b) == 32:
		return alg, b, nil
	}
	return "", nil, fmt.Errorf("digest=%s: want md5 (32 hex digits) or sha256 (64)", v)
}

func setService(s *ServiceConfig, t string) error {
	key, val, hasVal := strings.Cut(t, "=")
	if key == "expire" {
		s.Expire = true
		if hasVal {
			on, err := strconv.ParseBool(strings.NewReplacer("on", "true", "off", "false").Replace(val))
			if err != nil {
				return fmt.Errorf("expire=%s: want on or off", val)
			}
			s.Expire = on
		}
		return nil
	}
	if !hasVal || val == "" {
		return fmt.Errorf("%s needs a value (%s=...)", key, key)
	}
	var err error
	switch key {
	case "on-fail":
		switch val {
		case "inhibit":
			s.OnFail = Inhibit
		case "remove":
			s.OnFail = Remove
		default:
			return fmt.Errorf("on-fail=%s: want inhibit or remove", val)
		}
	case "sorry":
		ap, err := parseServer(val)
		if err != nil {
			return fmt.Errorf("sorry=%s: want ADDR[:PORT]", val)
		}
		if ap.Port() == 0 {
			ap = netip.AddrPortFrom(ap.Addr(), s.VIP.Port())
		}
		if ap.Addr().Is4() != s.VIP.Addr().Is4() {
			return fmt.Errorf("sorry=%s: not of the service's address family", val)
		}
		s.Sorry = ap
	case "sorry-weight":
		s.SorryWeight, err = parseCount(key, val, 1, nat.MaxWeight)
	case "quorum":
		s.Quorum, err = parseCount(key, val, 1, 1<<30)
	case "hysteresis":
		s.Hysteresis, err = parseCount(key, val, 0, 1<<30)
	}
	return err
}

// tokenize splits a line on blanks, with '...' and "..." quoting (a
// backslash escapes the next character outside single quotes) and # to
// the end of the line as a comment.
func tokenize(line string) ([]string, error) {
	var (
		toks []string
		cur  strings.Builder
		in   bool // inside a token
	)
	for i := 0; i < len(line); i++ {
		ch := line[i]
		switch {
		case ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n':
			if in {
				toks = append(toks, cur.String())
				cur.Reset()
				in = false
			}
		case ch == '#' && !in:
			return toks, nil
		case ch == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("unterminated ' quote")
			}
			cur.WriteString(line[i+1 : i+1+j])
			i += j + 1
			in = true
		case ch == '"':
			i++
			for ; i < len(line) && line[i] != '"'; i++ {
				if line[i] == '\\' && i+1 < len(line) {
					i++
				}
				cur.WriteByte(line[i])
			}
			if i >= len(line) {
				return nil, errors.New("unterminated \" quote")
			}
			in = true
		case ch == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
			in = true
		default:
			cur.WriteByte(ch)
			in = true
		}
	}
	if in {
		toks = append(toks, cur.String())
	}
	return toks, nil
}
