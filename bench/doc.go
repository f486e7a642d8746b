// Package bench holds tunvs's performance benchmarks; it has no code of its
// own, only go test benchmarks over the other packages' public APIs:
//
//   - BenchmarkDirectorForward/{bypass,stack}/{tcp4,tcp6,reply4}: a whole
//     director (director.New) on two in-memory TUN pairs, fed 1400-byte
//     packets of an established connection in batches of 32 and read back
//     on the far side. ns/op is per packet. "bypass" is the NAT rewrite
//     plus a direct write to the egress device; "stack" sends the
//     rewritten packet through gVisor's IP forwarding. tcp4 and tcp6 are
//     client -> real server (DNAT), reply4 is real server -> client (SNAT).
//   - BenchmarkNATRewrite/{tcp4,tcp6,udp4}: nat.Table.Process of one
//     1400-byte packet of an established flow (template copy included).
//   - BenchmarkNATRewriteSuper: the same with a 65535-byte IPv4 TCP
//     packet, to show that the rewrite cost does not depend on the size.
//   - BenchmarkTemplateCopy/{1400,65535}: the template copy that the
//     NATRewrite benchmarks include, alone, so it can be subtracted.
//   - BenchmarkTable/{lookup,insert}/{1k,100k,1M}: a table holding N
//     connections; lookup processes a packet of a random existing flow
//     (4096 pre-built flows, cycled), insert opens new connections while
//     the table stays between N and N+max(N/4, 256) (the new ones are
//     expired in an untimed sweep).
//     B/flow is the heap the population took per connection. Each size
//     is populated once per BenchmarkTable run (1M: a few seconds).
//
// The in-process lab's own benchmarks (what `tunvs lab` does: a bulk
// transfer and HTTP requests on new connections, with the bypass and
// without) are in package lab: go test -run '^$' -bench Lab ./lab/.
//
// Run them with
//
//	go test -run '^$' -bench . -benchmem ./bench/
//
// and as a smoke test (CI) with -benchtime 1x, which takes a few seconds;
// the 1M table cases are skipped with -short. A lost packet in the
// director benchmarks fails them after 5 s without progress instead of
// hanging.
package bench
