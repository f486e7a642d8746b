// Package netns builds test topologies out of real Linux network namespaces:
// hosts joined by veth pairs and bridges, with kernel TCP/IP stacks on both
// sides of tunvs. It is the one builder behind the daemon's end-to-end
// tests, `tunvs lab --netns` and the benchmark harness that compares tunvs
// with the kernel's own nftables NAT.
//
// It is for laboratories, not for production: nothing here configures the
// namespace a program was started in. All work happens inside a sandbox, a
// fresh user + network + mount + PID namespace that the program re-executes
// itself into (Sandbox, RunInSandbox). Every function that changes network
// state first calls CheckFresh, which refuses to run unless the current
// network namespace differs from the one recorded by the parent before it
// re-executed. Killing the sandbox's first process tears everything down,
// because every host namespace is kept alive only by processes in the
// sandbox's PID namespace.
//
// The headline feature is that none of this needs real root: the sandbox can
// be created by an ordinary user (uid 65534 in the tests) as long as the
// kernel allows unprivileged user namespaces. Inside, the process is root of
// its own user namespace and may create devices, addresses, routes, bridges
// and nftables rules in namespaces that user namespace owns.
//
// TUN devices are the exception worth knowing about: opening /dev/net/tun
// is an ordinary file permission check against the real (outer) user, so an
// unprivileged director needs /dev/net/tun to be mode 0666 (most
// distributions ship it that way; some VMs and containers do not). This
// package never changes that; tests that need TUN check it (CheckTUN) and
// skip with the reason.
//
// A sandbox created by root without Unprivileged maps its root to the real
// uid 0. Capabilities still only reach namespaces the sandbox owns, but file
// permission checks see uid 0: it can open a 0600 /dev/net/tun, and a
// command run in it could write root-owned files. Host.Sysctl refuses
// anything outside net.* for that reason. Prefer Unprivileged.
//
// Tools used: unshare, nsenter and setpriv (util-linux), ip (iproute2), cat,
// cp and sh. Ping is built in (raw ICMP sockets), so no ping(1) is needed.
//
// Typical use in a test:
//
//	func TestThing(t *testing.T) {
//		if !netns.RunInSandbox(t, netns.SandboxOptions{Unprivileged: true}) {
//			return // the outer half: the test ran (and was judged) in the sandbox
//		}
//		topo, err := netns.New()
//		if err != nil {
//			t.Fatal(err)
//		}
//		defer topo.Close()
//		client, _ := topo.AddHost("client")
//		server, _ := topo.AddHost("server")
//		_ = topo.Veth(client, "eth0", server, "eth0", 0)
//		...
//	}
package netns
