# tunvs: `make lab` runs the in-process LVS-NAT lab (no privileges needed),
# `make test` runs everything CI runs.

GO ?= go
PKGS := ./...

.PHONY: all build install docs lab test check cross unit race norace bench-smoke fuzz-smoke bench compare compare-cluster clean

all: build

# VERSION is stamped into both binaries for --version (internal/buildinfo):
# without it a build without VCS information (GOFLAGS=-buildvcs=false, a
# source tarball) says only "(devel)".
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null)
LDFLAGS := -X github.com/tunvs/tunvs/internal/buildinfo.Stamp=$(VERSION)

# The binaries are static (CGO_ENABLED=0): nothing in tunvs needs cgo (the
# net package's pure Go resolver reads /etc/hosts and resolv.conf), and
# not mapping libc and the loader keeps about 1.5 MB out of the daemon's
# RSS (issue 11: 14.5 -> 12.9 MB idle).
build:
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o bin/tunvs ./cmd/tunvs
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o bin/tunvsadm ./cmd/tunvsadm
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o bin/tunvs-bgp ./cmd/tunvs-bgp

# install: the binaries, man pages, bash and zsh completion and the systemd
# unit, under $(DESTDIR)$(PREFIX) (PREFIX=/usr for a package, DESTDIR for
# staging). `go install ./cmd/...` installs just the three binaries
# (tunvs-bgp is GoBGP, the speaker `tunvs run --bgp` starts: kept out of
# tunvs so that a director does not carry it, issue 11).
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/site-functions
UNITDIR ?= $(PREFIX)/lib/systemd/system

install: build
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(UNITDIR)
	install -m 0755 bin/tunvs bin/tunvsadm bin/tunvs-bgp $(DESTDIR)$(BINDIR)/
	install -m 0644 docs/man/tunvs.8 docs/man/tunvsadm.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 0644 docs/completion/tunvs.bash $(DESTDIR)$(BASHCOMPDIR)/tunvs
	install -m 0644 docs/completion/tunvsadm.bash $(DESTDIR)$(BASHCOMPDIR)/tunvsadm
	install -m 0644 docs/completion/zsh/_tunvs docs/completion/zsh/_tunvsadm $(DESTDIR)$(ZSHCOMPDIR)/
	sed 's|@BINDIR@|$(BINDIR)|g' contrib/systemd/tunvs.service > $(DESTDIR)$(UNITDIR)/tunvs.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/tunvs.service

# docs: the man pages and completions, generated from the flags the
# binaries parse (cmd/tunvs's TestGeneratedDocs fails when they drift).
docs:
	$(GO) run ./cmd/tunvs gen-docs docs

lab:
	$(GO) run ./cmd/tunvs lab

# test: formatting and vet, every benchmark once so none rots, a short fuzz
# run of each fuzz target, the tests that must run without -race, and last
# every test with the race detector (the namespace end-to-end tests
# included; they need unshare, user namespaces and /dev/net/tun).
test: check cross bench-smoke fuzz-smoke norace race

check:
	@out=$$(gofmt -l . | grep -v '^vendor/'); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# cross: every package (tests included: go vet compiles them) builds and
# vets for the systems tunvs promises to build on. Only Linux is run here;
# the others are cross-compiled and vetted.
CROSS_TARGETS ?= darwin/amd64 darwin/arm64 windows/amd64 freebsd/amd64 linux/arm64
cross:
	@set -e; for t in $(CROSS_TARGETS); do \
		echo "cross: $$t"; \
		GOOS=$${t%/*} GOARCH=$${t#*/} $(GO) build $(PKGS); \
		GOOS=$${t%/*} GOARCH=$${t#*/} $(GO) vet $(PKGS); \
	done

race:
	$(GO) test -race -count=1 -timeout 30m $(PKGS)

# Tests that -race must skip run here: allocation counts mean nothing under
# the race detector. (The in-process lab runs under -race: see
# netstack/payload_race.go for the gVisor bug it works around.)
norace:
	$(GO) test -count=1 -run 'AllocatesNothing' ./netstack/ ./tun/

unit:
	$(GO) test -count=1 -short $(PKGS)

bench-smoke:
	$(GO) test -run '^$$' -bench . -benchtime 1x -count=1 $(PKGS)

# Iteration counts, not durations: a timed -fuzztime can end in a spurious
# "context deadline exceeded" when a worker is slow to answer at the
# deadline on a loaded machine.
fuzz-smoke:
	$(GO) test -run '^$$' -fuzz '^FuzzPacket$$' -fuzztime 300000x ./nat/
	$(GO) test -run '^$$' -fuzz '^FuzzProcess$$' -fuzztime 200000x ./nat/
	$(GO) test -run '^$$' -fuzz '^FuzzTunnelError$$' -fuzztime 100000x ./nat/
	$(GO) test -run '^$$' -fuzz '^FuzzRules$$' -fuzztime 100000x ./admin/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime 50000x ./health/
	$(GO) test -run '^$$' -fuzz '^FuzzSplit$$' -fuzztime 50000x ./tun/
	$(GO) test -run '^$$' -fuzz '^FuzzCoalesce$$' -fuzztime 100000x ./tun/
	$(GO) test -run '^$$' -fuzz '^FuzzCoalesceUDP$$' -fuzztime 50000x ./tun/
	$(GO) test -run '^$$' -fuzz '^FuzzSplitter$$' -fuzztime 50000x ./tun/
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime 200000x ./ipvssync/
	$(GO) test -run '^$$' -fuzz '^FuzzReceive$$' -fuzztime 100000x ./vrrp/

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

# compare: the same workloads through every director this machine has
# (kernel IPVS if present, the kernel's nftables NAT, tunvs, HAProxy), in
# network namespaces; writes bench/results/{results.json,table.md,chart.svg}.
# Needs iperf3, wrk, nftables (and haproxy, ipvsadm to include those).
compare:
	$(GO) run ./bench/compare -rounds 3 -out bench/results

# compare-cluster: the scale-out lab's aggregate upload throughput through
# 1, 2 and 3 directors behind the BGP router's ECMP, with each director's
# CPU (bench/cluster; needs bird2).
compare-cluster:
	$(GO) run ./bench/cluster -directors 1,2,3

clean:
	rm -rf bin

# reliability: what an attacker or a fault does to a running director, in
# network namespaces, as root and as uid 65534: a spoofed SYN flood against
# a table bounded at 10,000 at 20k/s and at the fastest rate one sender
# makes (the SYN proxy in its default mode, and always on) and, for
# comparison, the fastest one against the kernel's own SYN cookies, a storm of
# malformed packets of 36 kinds, idle connections exhausting the metrics
# server and the control socket under a descriptor limit, a link's device
# deleted under it, and a soak (TUNVS_SOAK, 2m by default). Each prints
# its FIGURES. About 15 minutes; not part of `make test`.
.PHONY: reliability
reliability:
	TUNVS_RELIABILITY=1 $(GO) test -count=1 -timeout 60m -v -run '^(TestSYNFlood|TestSYNFloodKernel|TestMalformedStorm|TestListenerExhaustion|TestDeviceLoss|TestSoak)$$' ./e2e/
	$(GO) test -count=1 -v -run '^TestControlSurvivesFdExhaustion$$' ./admin/

# ipvs-parity: the differential test against kernel IPVS. parity/setup.sh
# installs qemu-system-x86, busybox-static and ipvsadm and fetches Debian's
# kernel (not installed; unpacked into a cache), then the test boots it
# under qemu once for every scenario in parity/scenarios/ and diffs the real
# servers chosen and `ipvsadm -L -n` against tunvs, and once more for the
# sync daemon (TestSync: a kernel master's datagrams against ipvssync's
# golden vectors; kernel and tunvs as each other's sync master and backup),
# and once for tunnelling (TestTunnel: tunvs -i to real servers whose
# kernel decapsulates ipip, gue and gre, as root and as uid 65534).
# See parity/README.md.
.PHONY: ipvs-parity
ipvs-parity:
	./parity/setup.sh
	TUNVS_PARITY=1 $(GO) test -count=1 -timeout 45m -run '^(TestIPVSParity|TestSync|TestTunnel)$$' -v ./parity/
