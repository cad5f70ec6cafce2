#!/usr/bin/env bash
# Creates the certificates for mTLS between a Hodei server and its workers,
# with the `hodei certs` command (rcgen; no OpenSSL needed).
#
#   scripts/generate-certificates.sh [OUT_DIR] [SAN...]
#
#   OUT_DIR   where to write (default: ./pki); an existing CA there is reused
#   SAN       names/addresses the server is reached at (default: localhost 127.0.0.1)
#
# Environment:
#   HODEI_BIN        the hodei CLI (default: `hodei` on PATH, else target/{release,debug}/hodei)
#   WORKERS          worker certificates to create (default: "worker-1")
#   CA_DAYS          CA lifetime in days (default 1825)
#   SERVER_DAYS      server certificate lifetime (default 365)
#   WORKER_DAYS      worker certificate lifetime (default 90)
#   FORCE=1          replace existing server/worker files (the CA is never replaced)
#
# Output: OUT_DIR/ca.crt, ca.key, server.crt, server.key, <worker>.crt/.key.
# Keys are mode 0600. Keep ca.key offline once the certificates are made.
set -euo pipefail

out="${1:-pki}"
shift || true
sans=("$@")
[ "${#sans[@]}" -gt 0 ] || sans=(localhost 127.0.0.1)

root="$(cd "$(dirname "$0")/.." && pwd)"
hodei="${HODEI_BIN:-}"
if [ -z "$hodei" ]; then
  if command -v hodei >/dev/null 2>&1; then
    hodei="$(command -v hodei)"
  elif [ -x "$root/target/release/hodei" ]; then
    hodei="$root/target/release/hodei"
  elif [ -x "$root/target/debug/hodei" ]; then
    hodei="$root/target/debug/hodei"
  else
    echo "building the hodei CLI (cargo build -p hodei-examples --bin hodei)..." >&2
    (cd "$root" && cargo build -q -p hodei-examples --bin hodei)
    hodei="$root/target/debug/hodei"
  fi
fi

force=()
[ "${FORCE:-0}" = "1" ] && force=(--force)

mkdir -p "$out"
if [ -f "$out/ca.crt" ] && [ -f "$out/ca.key" ]; then
  echo "==> reusing the CA in $out"
else
  echo "==> CA"
  "$hodei" certs ca --out "$out" --days "${CA_DAYS:-1825}"
fi

echo "==> server certificate"
san_args=()
for s in "${sans[@]}"; do san_args+=(--san "$s"); done
"$hodei" certs server --ca "$out" "${san_args[@]}" --out "$out" --days "${SERVER_DAYS:-365}" "${force[@]}"

for w in ${WORKERS:-worker-1}; do
  echo "==> worker certificate $w"
  "$hodei" certs worker --ca "$out" --name "$w" --out "$out" --days "${WORKER_DAYS:-90}" "${force[@]}"
done

cat <<EOF

Server:
  HODEI_TLS_CERT=$out/server.crt HODEI_TLS_KEY=$out/server.key HODEI_TLS_CLIENT_CA=$out/ca.crt hodei-server
Worker (one certificate per worker):
  HODEI_SERVER=https://${sans[0]}:50051 HODEI_TLS_CA=$out/ca.crt HODEI_TLS_CERT=$out/<worker>.crt HODEI_TLS_KEY=$out/<worker>.key hodei-worker
See docs/security/CERTIFICATE-MANAGEMENT.md.
EOF
