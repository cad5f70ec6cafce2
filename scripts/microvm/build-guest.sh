#!/usr/bin/env bash
# Builds the microVM guest image that the QEMU microvm provider (and a Firecracker
# provider, on hosts with hardware KVM) boots, from registry packages and local files only:
#
#   $OUT/vmlinuz             Debian's cloud kernel (bzImage, LZ4) — QEMU boots it as is
#   $OUT/vmlinux             the ELF kernel inside it — what Firecracker boots
#   $OUT/initramfs.cpio.gz   busybox-static + the virtio / fw_cfg / power button modules; mounts /dev/vda, switch_root
#   $OUT/rootfs.ext4         ext4 root: busybox, /sbin/init, /sbin/hodei-worker (static)
#   $OUT/kernel-release      the kernel's release string (`uname -r` in the guest)
#
#   scripts/microvm/build-guest.sh                     # OUT = target/microvm
#   HODEI_MICROVM_OUT=/some/dir scripts/microvm/build-guest.sh
#
# Environment:
#   HODEI_MICROVM_OUT          output dir (default <repo>/target/microvm); downloads are cached in $OUT/cache
#   HODEI_GUEST_KERNEL_PACKAGE Debian kernel package (default: what linux-image-cloud-amd64 depends on)
#   HODEI_GUEST_AGENT          a hodei-worker to put in the image instead of building a static one
#                              (a dynamically linked one gets its loader and libraries copied in)
#
# The agent is built with `-C target-feature=+crt-static` into its own target dir
# (<repo>/target/microvm-agent) so the main target dir is not invalidated; cargo
# reuses it when it is up to date. Each output is rebuilt only when its inputs changed.
#
# The guest's /sbin/init: mounts /proc, /sys, /dev, /tmp; reads the worker's settings
# (KEY=VALUE lines: HODEI_OTP, HODEI_SERVER, ...) from QEMU's fw_cfg item
# `opt/hodei/config` (so the OTP is never on the kernel command line) or, without it
# (Firecracker), from MMDS V2 at 169.254.169.254 (PUT /latest/api/token, then GET
# /hodei/otp, /hodei/server_address, ..., /hodei/env/<KEY>); brings eth0 up
# (HODEI_GUEST_IP, default 10.0.2.15/24 via 10.0.2.2 — QEMU user networking — or
# `dhcp` for busybox udhcpc); runs hodei-worker with its output on the console; powers
# the VM off when the agent exits.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
script="$repo/scripts/microvm/build-guest.sh"
out=${HODEI_MICROVM_OUT:-$repo/target/microvm}
cache="$out/cache"
mkdir -p "$cache"
out=$(cd "$out" && pwd)
cache="$out/cache"
# One build at a time per output dir (tests in parallel processes all ask for it).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$out/.lock"
  flock 9
fi

say() { printf 'build-guest: %s\n' "$*" >&2; }
die() { printf 'build-guest: ERROR: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"; }
need apt-get "this script downloads Debian packages with apt-get (Debian/Ubuntu host)"
need dpkg-deb "install dpkg"
need lz4 "apt-get install lz4 (extracts the ELF vmlinux for Firecracker)"
need mkfs.ext4 "apt-get install e2fsprogs"
need gzip "apt-get install gzip"
need sha256sum "apt-get install coreutils"
need cargo "install Rust (https://rustup.rs)"

# A file's inputs' fingerprint: rebuild an output only when it changed.
fingerprint() { cat "$@" | sha256sum | cut -d' ' -f1; }
up_to_date() { [ -f "$1" ] && [ -f "$1.stamp" ] && [ "$(cat "$1.stamp")" = "$2" ]; }

# ---- Packages (cached) ---------------------------------------------------------
download() { # package -> path of its .deb in the cache
  local pkg=$1 deb
  deb=$(ls "$cache/${pkg}_"*.deb 2>/dev/null | head -n1 || true)
  if [ -z "$deb" ]; then
    say "downloading $pkg"
    (cd "$cache" && apt-get download -q "$pkg" >/dev/null 2>&1) \
      || (cd "$cache" && apt-get download "$pkg") \
      || die "apt-get download $pkg failed (is the Debian package registry reachable? try apt-get update)"
    deb=$(ls "$cache/${pkg}_"*.deb | head -n1)
  fi
  printf '%s\n' "$deb"
}

kpkg=${HODEI_GUEST_KERNEL_PACKAGE:-}
if [ -z "$kpkg" ]; then
  kpkg=$(ls "$cache"/linux-image-*-cloud-amd64_*.deb 2>/dev/null | head -n1 | xargs -r basename | cut -d_ -f1 || true)
fi
if [ -z "$kpkg" ]; then
  resolve_kernel() {
    apt-cache depends linux-image-cloud-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' | head -n1 || true
  }
  kpkg=$(resolve_kernel)
  if [ -z "$kpkg" ] && [ "$(id -u)" = 0 ]; then
    say "apt-get update (no package lists)"
    apt-get update -qq >/dev/null 2>&1 || true
    kpkg=$(resolve_kernel)
  fi
  [ -n "$kpkg" ] || die "cannot resolve linux-image-cloud-amd64 (apt-get update?) — or set HODEI_GUEST_KERNEL_PACKAGE"
fi
kdeb=$(download "$kpkg")
bbdeb=$(download busybox-static)

kdir="$cache/${kpkg}"
if [ ! -f "$kdir/.unpacked" ]; then
  rm -rf "$kdir" && mkdir -p "$kdir"
  dpkg-deb -x "$kdeb" "$kdir"
  touch "$kdir/.unpacked"
fi
bbdir="$cache/busybox-static"
if [ ! -f "$bbdir/.unpacked" ] || [ "$bbdir/.unpacked" -ot "$bbdeb" ]; then
  rm -rf "$bbdir" && mkdir -p "$bbdir"
  dpkg-deb -x "$bbdeb" "$bbdir"
  touch "$bbdir/.unpacked"
fi
busybox="$bbdir/bin/busybox"
[ -x "$busybox" ] || die "busybox-static package has no bin/busybox"

kver=$(ls "$kdir/lib/modules" | head -n1)
[ -n "$kver" ] || die "$kpkg holds no modules"
vmlinuz=$(ls "$kdir/boot/vmlinuz-"* | head -n1)

# ---- Kernel: vmlinuz for QEMU, ELF vmlinux for Firecracker ----------------------
fp=$(printf '%s %s' "$kdeb" "$(fingerprint "$script")" | sha256sum | cut -d' ' -f1)
if ! up_to_date "$out/vmlinux" "$fp" || [ ! -f "$out/vmlinuz" ]; then
  say "kernel $kver"
  cp "$vmlinuz" "$out/vmlinuz.tmp" && mv "$out/vmlinuz.tmp" "$out/vmlinuz"
  # The bzImage holds an LZ4 (legacy frame) payload: find its magic 02 21 4c 18.
  offset=$(LC_ALL=C grep -obUaP '\x02\x21\x4c\x18' "$vmlinuz" | head -n1 | cut -d: -f1)
  [ -n "$offset" ] || die "no LZ4 frame in $vmlinuz (not an LZ4-compressed kernel?)"
  # lz4 may complain about the bytes after the frame; the ELF check below decides.
  tail -c +"$((offset + 1))" "$vmlinuz" | lz4 -dc 2>/dev/null > "$out/vmlinux.tmp" || true
  [ "$(head -c4 "$out/vmlinux.tmp" | od -An -tx1 | tr -d ' \n')" = "7f454c46" ] \
    || die "the LZ4 payload of $vmlinuz is not an ELF kernel"
  mv "$out/vmlinux.tmp" "$out/vmlinux"
  printf '%s\n' "$kver" > "$out/kernel-release"
  printf '%s' "$fp" > "$out/vmlinux.stamp"
fi

# ---- Initramfs -----------------------------------------------------------------
# Modules (and their dependencies, from each module's own `depends=`), in load order.
# button + evdev: the ACPI power button (QEMU's system_powerdown) as an input device the init reads.
wanted="virtio_mmio virtio_blk virtio_net qemu_fw_cfg button evdev"
declare -A modpath=() seen=()
while IFS= read -r f; do
  n=$(basename "$f"); n=${n%%.ko*}; n=${n//-/_}
  modpath[$n]=$f
done < <(find "$kdir/lib/modules/$kver/kernel" -name '*.ko')
builtin=$(sed 's#.*/##; s#\.ko$##; s#-#_#g' "$kdir/lib/modules/$kver/modules.builtin")
order=()
resolve() {
  local m=${1//-/_} d deps
  [ -n "${seen[$m]:-}" ] && return 0
  seen[$m]=1
  if [ -z "${modpath[$m]:-}" ]; then
    grep -qx "$m" <<<"$builtin" && return 0
    die "kernel module $m not found in $kpkg"
  fi
  deps=$(tr '\0' '\n' < "${modpath[$m]}" | sed -n 's/^depends=//p' | tr ',' ' ')
  for d in $deps; do resolve "$d"; done
  order+=("$m")
}
for m in $wanted; do resolve "$m"; done

fp=$(printf '%s %s %s' "$kdeb" "$bbdeb" "$(fingerprint "$script")" | sha256sum | cut -d' ' -f1)
if ! up_to_date "$out/initramfs.cpio.gz" "$fp"; then
  say "initramfs (modules: ${order[*]})"
  ird=$(mktemp -d "$out/initramfs.XXXXXX")
  mkdir -p "$ird"/{bin,dev,proc,sys,newroot,lib/modules}
  cp "$busybox" "$ird/bin/busybox"
  for m in "${order[@]}"; do cp "${modpath[$m]}" "$ird/lib/modules/$m.ko"; done
  printf '%s\n' "${order[@]}" > "$ird/lib/modules/load-order"
  cat > "$ird/init" <<'EOF'
#!/bin/busybox sh
# Initramfs: load the virtio modules, mount the root disk, hand over to its /sbin/init.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() { echo "initramfs: $*" > /dev/console; sleep 1; reboot -f; }
while read -r m; do
  insmod "/lib/modules/$m.ko" || echo "initramfs: insmod $m failed" > /dev/console
done < /lib/modules/load-order
i=0
while [ ! -b /dev/vda ]; do
  i=$((i + 1)); [ "$i" -gt 200 ] && fail "no /dev/vda after 10 s (is the root disk a virtio-blk-device?)"
  sleep 0.05
done
mount -t ext4 -o rw,noatime /dev/vda /newroot || fail "cannot mount /dev/vda"
umount /proc /sys
mount --move /dev /newroot/dev 2>/dev/null || umount /dev
exec switch_root /newroot /sbin/init
EOF
  chmod 755 "$ird/init"
  (cd "$ird" && find . -mindepth 1 | LC_ALL=C sort | "$busybox" cpio -o -H newc 2>/dev/null | gzip -9 > "$out/initramfs.cpio.gz.tmp")
  rm -rf "$ird"
  mv "$out/initramfs.cpio.gz.tmp" "$out/initramfs.cpio.gz"
  printf '%s' "$fp" > "$out/initramfs.cpio.gz.stamp"
fi

# ---- Agent (static) --------------------------------------------------------------
if [ -n "${HODEI_GUEST_AGENT:-}" ]; then
  agent=$HODEI_GUEST_AGENT
  [ -x "$agent" ] || die "HODEI_GUEST_AGENT=$agent is not an executable file"
else
  say "building the static hodei-worker (target/microvm-agent; a no-op when up to date)"
  (cd "$repo" && RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$repo/target/microvm-agent" \
    CARGO_PROFILE_DEV_DEBUG=0 cargo build -q -p hodei-examples --bin hodei-worker \
    --target x86_64-unknown-linux-gnu) || die "cargo build of the static hodei-worker failed"
  agent="$repo/target/microvm-agent/x86_64-unknown-linux-gnu/debug/hodei-worker"
fi
# A dynamically linked agent (e.g. the workspace's own target/debug/hodei-worker) gets
# its loader and libraries copied into the image; a static one needs nothing.
agent_libs=""
if command -v readelf >/dev/null 2>&1 && readelf -l "$agent" 2>/dev/null | grep -q 'program interpreter'; then
  need ldd "cannot list the libraries of the dynamically linked $agent (or build it static)"
  agent_libs=$(ldd "$agent" | grep -o '/[^ ]*' | sort -u)
  [ -n "$agent_libs" ] || die "ldd lists no libraries for the dynamically linked $agent"
fi

# ---- Root filesystem -------------------------------------------------------------
fp=$(printf '%s %s %s' "$bbdeb" "$agent_libs" "$(fingerprint "$script" "$agent")" | sha256sum | cut -d' ' -f1)
if ! up_to_date "$out/rootfs.ext4" "$fp"; then
  say "rootfs.ext4"
  root=$(mktemp -d "$out/rootfs.XXXXXX")
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,root,var/lib/hodei,usr/share/udhcpc}
  chmod 1777 "$root/tmp"
  cp "$busybox" "$root/bin/busybox"
  for applet in $("$busybox" --list-full); do
    case "$applet" in bin/busybox|sbin/init) continue ;; esac
    mkdir -p "$root/$(dirname "$applet")"
    ln -sf /bin/busybox "$root/$applet"
  done
  cp "$agent" "$root/sbin/hodei-worker"
  if command -v strip >/dev/null 2>&1; then strip "$root/sbin/hodei-worker" 2>/dev/null || true; fi
  chmod 755 "$root/sbin/hodei-worker"
  for lib in $agent_libs; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
  printf 'root:x:0:\n' > "$root/etc/group"
  printf '127.0.0.1 localhost\n' > "$root/etc/hosts"
  printf 'nameserver 10.0.2.3\n' > "$root/etc/resolv.conf"
  cat > "$root/usr/share/udhcpc/default.script" <<'EOF'
#!/bin/sh
# busybox udhcpc: apply the lease.
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    for r in $router; do ip route add default via "$r" dev "$interface"; break; done
    : > /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done ;;
esac
EOF
  chmod 755 "$root/usr/share/udhcpc/default.script"
  cat > "$root/sbin/init" <<'EOF'
#!/bin/sh
# Guest init: network, worker settings from fw_cfg (QEMU) or MMDS V2 (Firecracker), run the agent,
# power off when it exits.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs tmpfs /run
hostname hodei-vm
off() { sync; poweroff -f; reboot -f; }
# Ctrl-Alt-Del (Firecracker's SendCtrlAltDel) signals init (SIGINT) instead of rebooting at once.
echo 0 > /proc/sys/kernel/ctrl-alt-del 2>/dev/null
echo "hodei-guest: init $(cut -d' ' -f1 /proc/uptime)s"

# Settings: KEY=VALUE lines from fw_cfg (never from the kernel command line).
cfg=/sys/firmware/qemu_fw_cfg/by_name/opt/hodei/config/raw
if [ ! -r "$cfg" ]; then
  # Firecracker: MMDS V2 on eth0 (PUT a session token, then GET /hodei/<key>, plain text).
  mmds_addr=${HODEI_MMDS_ADDR:-169.254.169.254}
  mmds_body() { awk 'b { print } /^\r?$/ { b = 1 }'; }
  mmds_get() {
    printf 'GET %s HTTP/1.1\r\nHost: %s\r\nX-metadata-token: %s\r\nConnection: close\r\n\r\n' \
      "$1" "$mmds_addr" "$token" | nc -w 3 "$mmds_addr" 80 | mmds_body
  }
  if [ -z "${HODEI_MMDS_ADDR:-}" ]; then
    ip link set lo up
    ip link set eth0 up
    ip addr add 169.254.0.2/16 dev eth0 2>/dev/null
  fi
  token=$(printf 'PUT /latest/api/token HTTP/1.1\r\nHost: %s\r\nX-metadata-token-ttl-seconds: 300\r\nConnection: close\r\n\r\n' \
    "$mmds_addr" | nc -w 3 "$mmds_addr" 80 | mmds_body | tr -d '\r\n')
  if [ -n "$token" ]; then
    cfg=/run/hodei-mmds.env
    : > "$cfg"; chmod 600 "$cfg"
    for pair in HODEI_OTP:otp HODEI_SERVER:server_address HODEI_WORKER_ID:worker_id \
                HODEI_MAX_CONCURRENT_JOBS:max_concurrent_jobs; do
      v=$(mmds_get "/hodei/${pair#*:}" | tr -d '\r\n')
      [ -n "$v" ] && printf '%s=%s\n' "${pair%%:*}" "$v" >> "$cfg"
    done
    for k in $(mmds_get /hodei/env/ | tr -d '\r'); do
      printf '%s=%s\n' "$k" "$(mmds_get "/hodei/env/$k" | tr -d '\r\n')" >> "$cfg"
    done
    grep -q '^HODEI_OTP=' "$cfg" || token=
  fi
  if [ -z "$token" ]; then
    echo "hodei-guest: no worker settings (neither fw_cfg opt/hodei/config nor MMDS V2 at $mmds_addr)"
    off
  fi
fi
while IFS= read -r line || [ -n "$line" ]; do
  key=${line%%=*}
  case "$key" in ''|[0-9]*|*[!A-Za-z0-9_]*) continue ;; esac
  [ "$key" = "$line" ] && continue
  export "$line"
done < "$cfg"

ip link set lo up
ip link set eth0 up
case "${HODEI_GUEST_IP:-10.0.2.15/24}" in
  dhcp) udhcpc -i eth0 -q -n -t 10 -s /usr/share/udhcpc/default.script || echo "hodei-guest: DHCP failed" ;;
  *) ip addr add "${HODEI_GUEST_IP:-10.0.2.15/24}" dev eth0
     ip route add default via "${HODEI_GUEST_GATEWAY:-10.0.2.2}" ;;
esac
unset HODEI_GUEST_IP HODEI_GUEST_GATEWAY
export HODEI_WORK_DIR=${HODEI_WORK_DIR:-/tmp/hodei-jobs}
export HOME=/root
echo "hodei-guest: starting hodei-worker $(cut -d' ' -f1 /proc/uptime)s"
cd /
/sbin/hodei-worker &
agent=$!
# A clean stop on the VMM's request: SIGTERM makes the agent drain and exit
# (a second request makes it exit at once); then the VM powers off as usual.
stop() {
  echo "hodei-guest: $1: stopping hodei-worker"
  kill -TERM "$agent" 2>/dev/null
}
trap 'stop ctrl-alt-del' INT
trap 'stop "power button"' PWR
trap 'stop SIGTERM' TERM
# QEMU's system_powerdown is an ACPI power button press: its input device
# (evdev) delivers a key event, which is forwarded to init as SIGPWR.
for ev in /sys/class/input/event*; do
  [ "$(cat "$ev/device/name" 2>/dev/null)" = "Power Button" ] || continue
  # Opened before saying so (events are queued from the open on); one read
  # returns a whole press (key down, up and their syncs).
  (exec 3<"/dev/input/${ev##*/}" || exit
   echo "hodei-guest: power button watched"
   while dd of=/dev/null bs=4096 count=1 <&3 2>/dev/null; do kill -PWR 1; done) &
done
# `wait` returns early when a trapped signal arrives: wait until the agent is gone.
while :; do
  wait "$agent"
  code=$?
  kill -0 "$agent" 2>/dev/null || break
done
echo "hodei-guest: hodei-worker exited with code $code; powering off"
off
EOF
  chmod 755 "$root/sbin/init"
  # Size: contents + 64 MiB for job files, rounded to MiB.
  kb=$(du -sk "$root" | cut -f1)
  mb=$(( kb / 1024 + 64 ))
  rm -f "$out/rootfs.ext4.tmp"
  mkfs.ext4 -q -F -L hodei-root -d "$root" "$out/rootfs.ext4.tmp" "${mb}M" \
    || die "mkfs.ext4 -d failed (needs e2fsprogs >= 1.43)"
  rm -rf "$root"
  mv "$out/rootfs.ext4.tmp" "$out/rootfs.ext4"
  printf '%s' "$fp" > "$out/rootfs.ext4.stamp"
fi

say "done: $out (kernel $kver)"
printf 'HODEI_QEMU_KERNEL=%s\nHODEI_QEMU_INITRD=%s\nHODEI_QEMU_ROOTFS=%s\nHODEI_FC_KERNEL_PATH=%s\nHODEI_FC_ROOTFS_PATH=%s\n' \
  "$out/vmlinuz" "$out/initramfs.cpio.gz" "$out/rootfs.ext4" "$out/vmlinux" "$out/rootfs.ext4"
