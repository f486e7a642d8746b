#!/bin/sh
# pid 1 inside the parity VM (after switch_root into the host's root under a
# tmpfs overlay): mount the basics, make Debian's kernel modules visible at
# /lib/modules/$KVER, load IPVS and its schedulers, run the scenarios, power
# off. /job is the host's job directory (read-write 9p).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
. /job/env
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/netns "/lib/modules/$KVER"
mount --bind "$MODDIR" "/lib/modules/$KVER"
rc=0
for m in ip_vs veth bridge $(ls "/lib/modules/$KVER/kernel/net/netfilter/ipvs/" | sed -n 's/^\(ip_vs_[a-z]*\)\.ko.*/\1/p' | grep -v -e ip_vs_ftp -e ip_vs_pe_sip); do
	modprobe "$m" || { echo "parity-vm: modprobe $m failed"; rc=1; }
done
echo "parity-vm: kernel $(uname -r), schedulers: $(ls /lib/modules/$KVER/kernel/net/netfilter/ipvs/ | tr '\n' ' ')"
if [ $rc = 0 ]; then
	# RUN (from /job/env) replaces the scenario run, e.g. the sync capture.
	${RUN:-/job/ipvsrun -out /job/results.json -node-exporter "$NODE_EXPORTER" /job/scenarios/*.txt} >/job/ipvsrun.log 2>&1
	rc=$?
	cat /job/ipvsrun.log
fi
echo "parity-vm: exit $rc"
echo $rc >/job/exit
sync
busybox poweroff -f 2>/dev/null || echo o >/proc/sysrq-trigger
sleep 10
