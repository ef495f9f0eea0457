#!/bin/busybox sh
# Guest init of `cargo xtask vmtest` (generated into the initramfs; source: xtask/src/vmtest/init.sh).
# Mounts the kernel file systems, reports what this kernel offers, runs the scenarios and powers
# off. Every line the host reads starts with FRAGTRACE-VMTEST-.
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
mount -t tmpfs tmpfs /tmp
echo "FRAGTRACE-VMTEST-BOOTED kernel=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)"

echo FRAGTRACE-VMTEST-FORMAT-BEGIN
cat /sys/kernel/tracing/events/kmem/mm_page_alloc/format
echo FRAGTRACE-VMTEST-FORMAT-END

MODE=$(sed -n 's/.*fragtrace_vmtest=\([a-z]*\).*/\1/p' /proc/cmdline)
REPEAT=$(sed -n 's/.*fragtrace_vmtest_repeat=\([0-9]*\).*/\1/p' /proc/cmdline)
/bin/frag-scenario guest --mode "${MODE:-full}" --repeat "${REPEAT:-1}" --fragtrace /bin/fragtrace
echo "FRAGTRACE-VMTEST-EXIT $?"
poweroff -f
