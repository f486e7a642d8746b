#!/bin/sh
# bench/memdiag/build.sh OUT: build tunvs as make does (CGO_ENABLED=0) into
# OUT, with a probe of the Go runtime's own memory added through
# `go build -overlay` (nothing in the tree changes): sent SIGUSR2, the
# daemon appends a line to the file $TUNVS_MEMDIAG (see probe.go.in).
# What it shows that /proc and runtime/metrics do not: how much of the
# runtime's off-heap memory ("immortal metadata", persistentalloc) is the
# span sets of its size classes, which it never hands back.
#
#   bench/memdiag/build.sh /tmp/tunvs-memdiag
#   TUNVS_MEMDIAG=/tmp/memdiag.log /tmp/tunvs-memdiag run ... &
#   kill -USR2 $!; cat /tmp/memdiag.log
#
# It patches two runtime files of the Go in use (mspanset.go,
# set_vma_name_linux.go) and stops if they no longer read as expected.
set -eu
out=${1:?usage: build.sh OUT}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
rt=$(go env GOROOT)/src/runtime
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# patch FILE PATTERN LINE: insert LINE after the one line matching PATTERN.
patch() {
	n=$(grep -c -- "$2" "$rt/$1" || true)
	if [ "$n" != 1 ]; then
		echo "memdiag: $rt/$1: '$2' found $n times, want once (another Go?)" >&2
		exit 1
	fi
	awk -v pat="$2" -v add="$3" '{ print } index($0, pat) { print add }' "$rt/$1" >"$tmp/$1"
}
patch mspanset.go 'newSpine := persistentalloc(' '			memdiagSpines.Add(1); memdiagSpineBytes.Add(int64(newCap * goarch.PtrSize))'
patch set_vma_name_linux.go 'func setVMAName(start unsafe.Pointer, length uintptr, name string) {' '	memdiagRecord(start, length, name)'
# The block count goes before persistentalloc's return in the pool.
grep -q 'return (\*spanSetBlock)(persistentalloc(' "$tmp/mspanset.go" || {
	echo "memdiag: $rt/mspanset.go: no spanSetBlock persistentalloc (another Go?)" >&2
	exit 1
}
awk '/return \(\*spanSetBlock\)\(persistentalloc\(/ { print "\tmemdiagBlocks.Add(1)" } { print }' "$tmp/mspanset.go" >"$tmp/mspanset.go.1"
mv "$tmp/mspanset.go.1" "$tmp/mspanset.go"
cp "$here/runtime.go.in" "$tmp/zz_memdiag.go"
cp "$here/probe.go.in" "$tmp/zz_memdiag_probe.go"
cat >"$tmp/overlay.json" <<JSON
{"Replace": {
  "$rt/mspanset.go": "$tmp/mspanset.go",
  "$rt/set_vma_name_linux.go": "$tmp/set_vma_name_linux.go",
  "$rt/zz_memdiag.go": "$tmp/zz_memdiag.go",
  "$root/cmd/tunvs/zz_memdiag_probe.go": "$tmp/zz_memdiag_probe.go"
}}
JSON
cd "$root"
CGO_ENABLED=0 go build -overlay "$tmp/overlay.json" -o "$out" ./cmd/tunvs
