#!/usr/bin/env bash
# Builds the Hodei worker image (default `hodei-worker:latest`) from files on
# this machine only: no registry, no network, no image builder.
#
# The image holds the `hodei-worker` agent, bash, busybox-static (or the host's
# coreutils and their libraries), CA certificates, a non-root user `hodei`
# (uid/gid 10001, the default USER) and a writable work directory /work
# (HODEI_WORK_DIR). Its ENTRYPOINT is the agent.
#
# Environment:
#   HODEI_WORKER_IMAGE   image name:tag to build            (hodei-worker:latest)
#   HODEI_WORKER_BINARY  agent binary to put in the image   (target/debug/hodei-worker,
#                        built with cargo when missing)
#   HODEI_IMAGE_EXTRA    extra host executables to add (space separated)
#
# Idempotent: the root filesystem is packed deterministically; when the image
# already holds the same content it is left alone. Prints the image id.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
image="${HODEI_WORKER_IMAGE:-hodei-worker:latest}"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
binary="${HODEI_WORKER_BINARY:-$target_dir/debug/hodei-worker}"

log() { echo "build-worker-image: $*" >&2; }
die() { log "error: $*"; exit 1; }

command -v docker >/dev/null || die "the docker CLI is not installed"
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 ||
    die "the Docker daemon is not reachable (DOCKER_HOST=${DOCKER_HOST:-unix:///var/run/docker.sock})"

if [[ ! -x "$binary" ]]; then
    if [[ -n "${HODEI_WORKER_BINARY:-}" ]]; then
        die "HODEI_WORKER_BINARY=$binary is not an executable file"
    fi
    log "building the agent: cargo build -p hodei-examples --bin hodei-worker"
    (cd "$repo" && cargo build -q -p hodei-examples --bin hodei-worker)
fi
[[ -x "$binary" ]] || die "agent binary $binary not found after the build"

# Tests build the image from several processes at once: one build at a time
# (the later ones then find the content unchanged and leave the image alone).
if command -v flock >/dev/null; then
    exec 9>"${TMPDIR:-/tmp}/hodei-worker-image.lock"
    flock 9
fi

rootfs="$(mktemp -d "${TMPDIR:-/tmp}/hodei-rootfs.XXXXXX")"
trap 'rm -rf "$rootfs"' EXIT

# Merged-/usr layout, like current Debian: /bin, /lib, /lib64, /sbin point into /usr.
mkdir -p "$rootfs"/usr/{bin,sbin,lib,lib64,local/bin} "$rootfs"/{etc/ssl/certs,tmp,work,root,proc,sys,dev}
for d in bin sbin lib lib64; do ln -s "usr/$d" "$rootfs/$d"; done
chmod 1777 "$rootfs/tmp"

# Where a host path lands in the merged-/usr root filesystem.
dest_of() {
    local p="$1"
    case "$p" in
        /usr/*) echo "$rootfs$p" ;;
        /bin/* | /sbin/* | /lib/* | /lib64/*) echo "$rootfs/usr$p" ;;
        *) echo "$rootfs$p" ;;
    esac
}

# Copies a file (symlinks resolved) to the same place in the rootfs.
copy_file() {
    local src="$1" dst
    dst="$(dest_of "$src")"
    [[ -e "$dst" ]] && return 0
    mkdir -p "$(dirname "$dst")"
    cp -L "$src" "$dst"
}

# Copies an executable and every shared library ldd lists for it.
copy_with_libs() {
    local exe="$1" dst="${2:-$1}"
    local d
    d="$(dest_of "$dst")"
    if [[ ! -e "$d" ]]; then
        mkdir -p "$(dirname "$d")"
        cp -L "$exe" "$d"
    fi
    local lib
    while read -r lib; do
        [[ -n "$lib" && -e "$lib" ]] && copy_file "$lib"
    done < <(ldd "$exe" 2>/dev/null | grep -oE '(/[^ ]+)' | grep -v '^/.*:$' || true)
}

# The agent, without debug info (a debug build is ~140 MB, stripped ~20 MB).
agent_dst="$rootfs/usr/local/bin/hodei-worker"
if command -v objcopy >/dev/null; then
    objcopy --strip-debug "$binary" "$agent_dst"
else
    cp -L "$binary" "$agent_dst"
fi
chmod 0755 "$agent_dst"
copy_with_libs "$binary" /usr/local/bin/hodei-worker

# bash: the agent runs job scripts with `set -euo pipefail`.
copy_with_libs "$(type -P bash)" /usr/bin/bash
ln -sf bash "$rootfs/usr/bin/sh"

# Tools for scripts: busybox-static when installed, else the host's coreutils.
busybox="$(type -P busybox || true)"
if [[ -n "$busybox" ]] && ! ldd "$busybox" >/dev/null 2>&1; then
    log "adding busybox-static"
    cp -L "$busybox" "$rootfs/usr/bin/busybox"
    while read -r applet; do
        [[ -z "$applet" || -e "$rootfs/usr/bin/$applet" ]] && continue
        ln -s busybox "$rootfs/usr/bin/$applet"
    done < <("$busybox" --list)
else
    log "busybox-static not installed: adding the host's coreutils and their libraries"
    tools=(cat ls echo env sleep mkdir rm rmdir cp mv touch chmod chown ln readlink realpath
        head tail wc sort uniq tr cut date true false printf id whoami uname hostname
        basename dirname tee test seq yes nproc stat du df mktemp timeout expr
        sed grep awk find xargs ps kill gzip tar sha256sum md5sum base64 od diff)
    for t in "${tools[@]}"; do
        p="$(type -P "$t" || true)"
        [[ -n "$p" ]] && copy_with_libs "$p" "/usr/bin/$t"
    done
fi
for t in ${HODEI_IMAGE_EXTRA:-}; do
    p="$(type -P "$t" || true)"
    [[ -n "$p" ]] || die "HODEI_IMAGE_EXTRA: $t not found on PATH"
    copy_with_libs "$p" "/usr/bin/$t"
done

# CA certificates (the agent may talk TLS to the control plane).
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
    cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
else
    log "warning: /etc/ssl/certs/ca-certificates.crt not found; the image has no CA bundle"
fi

# Users, groups, name service.
cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/bash
hodei:x:10001:10001:hodei worker:/work:/bin/bash
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
hodei:x:10001:
nogroup:x:65534:
EOF
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
printf 'ID=hodei-worker\nNAME="Hodei worker (local rootfs)"\n' >"$rootfs/etc/os-release"

# /work belongs to the worker user: as root, chown it; otherwise pack it with
# that owner through fakeroot, or fall back to a world-writable /work.
chmod 0755 "$rootfs/work"
# A deterministic tarball (sorted, mtime 0, root-owned except /work).
pack_tar() {
    python3 - "$rootfs" <<'PY'
import io, os, sys, tarfile
root = sys.argv[1]
out = tarfile.open(fileobj=sys.stdout.buffer, mode="w|", format=tarfile.GNU_FORMAT)
paths = []
for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    for n in dirnames + sorted(filenames):
        paths.append(os.path.join(dirpath, n))
for p in sorted(paths, key=lambda p: os.path.relpath(p, root)):
    rel = "./" + os.path.relpath(p, root)
    ti = out.gettarinfo(p, arcname=rel)
    ti.mtime = 0
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    if rel == "./work":
        ti.uid = ti.gid = 10001
        ti.mode = 0o755
    if ti.isreg():
        with open(p, "rb") as f:
            out.addfile(ti, f)
    else:
        out.addfile(ti)
out.close()
PY
}
tarball="$rootfs.tar"
trap 'rm -rf "$rootfs" "$tarball"' EXIT
if command -v python3 >/dev/null; then
    pack_tar >"$tarball"
else
    chmod 1777 "$rootfs/work"
    tar -C "$rootfs" --sort=name --mtime=@0 --numeric-owner --owner=0 --group=0 -cf "$tarball" .
fi
digest="$(sha256sum "$tarball" | cut -c1-64)"

current="$(docker image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$image" 2>/dev/null |
    sed -n 's/^HODEI_IMAGE_CONTENT=//p' || true)"
if [[ "$current" == "$digest" ]]; then
    log "$image is up to date (content $digest)"
    docker image inspect --format '{{.Id}}' "$image"
    exit 0
fi

old_id="$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)"
log "importing $image ($(du -h "$tarball" | cut -f1))"
docker import \
    -c 'USER 10001:10001' \
    -c 'WORKDIR /work' \
    -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
    -c 'ENV HOME=/work' \
    -c 'ENV TMPDIR=/tmp' \
    -c 'ENV NO_COLOR=1' \
    -c 'ENV HODEI_WORK_DIR=/work' \
    -c 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    -c "ENV HODEI_IMAGE_CONTENT=$digest" \
    -c 'ENTRYPOINT ["/usr/local/bin/hodei-worker"]' \
    - "$image" <"$tarball" >/dev/null
new_id="$(docker image inspect --format '{{.Id}}' "$image")"
if [[ -n "$old_id" && "$old_id" != "$new_id" ]]; then
    # The previous build is now untagged; drop it unless a container still uses it.
    docker image rm "$old_id" >/dev/null 2>&1 || true
fi
echo "$new_id"
