#!/usr/bin/env bash
# parity/setup.sh: prepare the IPVS differential test (make ipvs-parity).
#
# Installs qemu-system-x86, busybox-static and ipvsadm, fetches Debian's
# kernel package (linux-image-amd64's dependency) WITHOUT installing it:
# `apt-get download` + `dpkg-deb -x` into a cache directory, runs depmod
# there, and builds a small initramfs (busybox + the modules needed to mount
# the host's root over virtio-9p with a tmpfs overlay). Idempotent: a
# second run with everything in place only prints the cache's env file.
#
# Cache: $TUNVS_PARITY_CACHE, else /var/cache/tunvs-parity as root, else
# ${XDG_CACHE_HOME:-~/.cache}/tunvs-parity. Writes $cache/parity.env
# (KERNEL=, INITRD=, KVER=, MODDIR=) for the test to read.
set -euo pipefail

if [ -n "${TUNVS_PARITY_CACHE:-}" ]; then
	cache=$TUNVS_PARITY_CACHE
elif [ "$(id -u)" = 0 ]; then
	cache=/var/cache/tunvs-parity
else
	cache=${XDG_CACHE_HOME:-$HOME/.cache}/tunvs-parity
fi
mkdir -p "$cache"

sudo=
[ "$(id -u)" = 0 ] || sudo=sudo
export DEBIAN_FRONTEND=noninteractive

need=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
# busybox-static: a static /bin/busybox (the initramfs has no libc).
case $([ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | tr '\n' ' '; LC_ALL=C ldd /bin/busybox 2>&1) in
*"switch_root "*"not a dynamic executable"*) ;;
*) need+=(busybox-static) ;;
esac
command -v ipvsadm >/dev/null 2>&1 || [ -x /usr/sbin/ipvsadm ] || need+=(ipvsadm)
command -v depmod >/dev/null 2>&1 || [ -x /usr/sbin/depmod ] || need+=(kmod)
command -v cpio >/dev/null 2>&1 || need+=(cpio)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# keepalived: the keepalived scenario's oracle (keepalived_lvs.txt); the VM
# runs the host's binary, in the foreground, checkers only. Installing it
# starts nothing where systemd does not run; where it does, the package's
# unit needs /etc/keepalived/keepalived.conf, which this does not write.
command -v keepalived >/dev/null 2>&1 || [ -x /usr/sbin/keepalived ] || need+=(keepalived)
updated=
if [ ${#need[@]} -gt 0 ]; then
	echo "setup: installing ${need[*]}"
	$sudo apt-get update -qq
	updated=1
	$sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
PATH=$PATH:/usr/sbin:/sbin

# The kernel: the package linux-image-amd64 points at, unless pinned.
pkg=${TUNVS_PARITY_KPKG:-}
if [ -z "$pkg" ]; then
	pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
	if [ -z "$pkg" ] && [ -z "$updated" ]; then
		$sudo apt-get update -qq
		pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
	fi
fi
if [ -z "$pkg" ]; then
	# Offline: take whatever kernel the cache already holds.
	pkg=$(cat "$cache/kpkg" 2>/dev/null || true)
fi
[ -n "$pkg" ] || { echo "setup: cannot find Debian's kernel package (apt-cache depends linux-image-amd64)" >&2; exit 1; }
kver=${pkg#linux-image-}
kroot=$cache/kernel-$kver
if [ ! -e "$kroot/.done" ]; then
	echo "setup: fetching $pkg (not installed; unpacked into $kroot)"
	rm -rf "$kroot" "$cache/dl"
	mkdir -p "$cache/dl" "$kroot"
	# _apt cannot write into a root-only directory; download as ourselves.
	(cd "$cache/dl" && apt-get download "$pkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
	deb=$(ls "$cache"/dl/*.deb 2>/dev/null | head -1)
	[ -n "$deb" ] || { echo "setup: apt-get download $pkg failed" >&2; exit 1; }
	dpkg-deb -x "$deb" "$kroot"
	rm -rf "$cache/dl"
	depmod -b "$kroot" "$kver"
	touch "$kroot/.done"
fi
echo "$pkg" >"$cache/kpkg"
moddir=$kroot/lib/modules/$kver
vmlinuz=$kroot/boot/vmlinuz-$kver
[ -f "$vmlinuz" ] || { echo "setup: $vmlinuz missing" >&2; exit 1; }

# The initramfs: busybox, the modules to mount 9p + overlay, and /init.
initrd=$cache/initrd-$kver.cpio.gz
stamp=$(sha256sum "$0" | cut -c1-16)
if [ ! -f "$initrd" ] || [ "$(cat "$initrd.stamp" 2>/dev/null)" != "$stamp" ]; then
	echo "setup: building $initrd"
	ir=$(mktemp -d)
	trap 'rm -rf "$ir"' EXIT
	mkdir -p "$ir"/{bin,dev,proc,sys,lower,upper,newroot,mods}
	cp /bin/busybox "$ir/bin/busybox"
	: >"$ir/mods/order"
	for m in virtio_pci 9pnet_virtio 9p overlay; do
		modprobe -d "$kroot" -S "$kver" --show-depends "$m" | awk '$1=="insmod"{print $2}'
	done | awk '!seen[$0]++' | while read -r ko; do
		b=$(basename "$ko")
		case "$b" in
		*.ko.xz) xz -dc "$ko" >"$ir/mods/${b%.xz}"; b=${b%.xz} ;;
		*.ko.zst) zstd -qdc "$ko" >"$ir/mods/${b%.zst}"; b=${b%.zst} ;;
		*) cp "$ko" "$ir/mods/$b" ;;
		esac
		echo "$b" >>"$ir/mods/order"
	done
	cat >"$ir/init" <<'EOF'
#!/bin/busybox sh
# tunvs parity initramfs: host root (9p, read-only) under a tmpfs overlay,
# the job directory (9p, read-write) at /job, then /job/run.sh as pid 1.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
fail() { echo "parity-init: $*"; echo o >/proc/sysrq-trigger; sleep 5; }
for m in $(cat /mods/order); do insmod /mods/$m || fail "insmod $m"; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /lower || fail "mount hostroot"
mount -t tmpfs -o mode=755 tmpfs /upper
mkdir -p /upper/u /upper/w
mount -t overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w overlay /newroot || fail "mount overlay"
mkdir -p /newroot/job
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 job /newroot/job || fail "mount job"
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /bin/sh /job/run.sh
EOF
	chmod 755 "$ir/init"
	(cd "$ir" && find . | cpio -o -H newc --quiet | gzip -1) >"$initrd.tmp"
	mv "$initrd.tmp" "$initrd"
	echo "$stamp" >"$initrd.stamp"
fi

# node_exporter (Debian's prometheus-node-exporter), for the node_exporter
# steps: downloaded and unpacked like the kernel, not installed (its
# package would start a service). Optional: without it those steps are
# skipped.
nodeexp=$cache/node-exporter/usr/bin/prometheus-node-exporter
if [ ! -x "$nodeexp" ]; then
	rm -rf "$cache/ne-dl" "$cache/node-exporter"
	mkdir -p "$cache/ne-dl"
	(cd "$cache/ne-dl" && apt-get download prometheus-node-exporter 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
	deb=$(ls "$cache"/ne-dl/*.deb 2>/dev/null | head -1)
	if [ -n "$deb" ]; then
		dpkg-deb -x "$deb" "$cache/node-exporter"
	else
		echo "setup: apt-get download prometheus-node-exporter failed: node_exporter steps will be skipped" >&2
	fi
	rm -rf "$cache/ne-dl"
fi
[ -x "$nodeexp" ] || nodeexp=

cat >"$cache/parity.env" <<EOF
KVER=$kver
KERNEL=$vmlinuz
INITRD=$initrd
MODDIR=$moddir
NODE_EXPORTER=$nodeexp
EOF
echo "setup: ready ($cache/parity.env)"
cat "$cache/parity.env"
