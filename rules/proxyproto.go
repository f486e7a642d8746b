package rules

import "fmt"

// ProxyProtocol is DPVS's --proxy-protocol: whether the director sends a
// full-NAT real server the PROXY protocol header (haproxy's
// doc/proxy-protocol.txt) with the client's address in front of the
// client's first data. A service sets it for its full-NAT real servers; a
// real server may set its own, which wins (ProxyUnset: the service's).
type ProxyProtocol uint8

// The settings, as DPVS's proxy_protocol_type names them
// (include/conf/service.h).
const (
	// ProxyUnset: for a service, no header; for a real server, the
	// service's setting.
	ProxyUnset ProxyProtocol = iota
	// ProxyDisable is "disable": no header.
	ProxyDisable
	// ProxyV1 and ProxyV2 send the header of that version; a header the
	// client sent itself is replaced (DPVS's secure mode).
	ProxyV1
	ProxyV2
	// ProxyV1Insecure and ProxyV2Insecure pass a header of that version
	// the client sent itself on unchanged, and send one otherwise.
	ProxyV1Insecure
	ProxyV2Insecure
)

var proxyNames = [...]string{ProxyUnset: "", ProxyDisable: "disable", ProxyV1: "v1", ProxyV2: "v2",
	ProxyV1Insecure: "v1-insecure", ProxyV2Insecure: "v2-insecure"}

// String is the setting as --proxy-protocol takes it ("" for ProxyUnset).
func (p ProxyProtocol) String() string {
	if int(p) < len(proxyNames) {
		return proxyNames[p]
	}
	return "unknown"
}

// ParseProxyProtocol reads --proxy-protocol's argument. Unlike DPVS's
// proxy_protocol_type, which takes anything else as "disable", a word it
// does not know is an error.
func ParseProxyProtocol(s string) (ProxyProtocol, error) {
	for i, n := range proxyNames {
		if i != int(ProxyUnset) && n == s {
			return ProxyProtocol(i), nil
		}
	}
	return ProxyUnset, fmt.Errorf("%w: proxy protocol %q (disable, v1, v2, v1-insecure or v2-insecure)", ErrInvalid, s)
}

// Version is the header version sent: 1, 2, or 0 for none.
func (p ProxyProtocol) Version() int {
	switch p {
	case ProxyV1, ProxyV1Insecure:
		return 1
	case ProxyV2, ProxyV2Insecure:
		return 2
	}
	return 0
}

// Insecure reports whether a header the client sent is passed on.
func (p ProxyProtocol) Insecure() bool { return p == ProxyV1Insecure || p == ProxyV2Insecure }

// Effective is what a real server with setting p gets in a service with
// setting svc.
func (p ProxyProtocol) Effective(svc ProxyProtocol) ProxyProtocol {
	if p == ProxyUnset {
		return svc
	}
	return p
}
