#!/usr/bin/env bash
# E2B cloud users' way against SoulBox (issue 17 item 2): the official e2b Python SDK (tests/compat's newest pin)
# with only E2B_DOMAIN and E2B_API_KEY set, in a network namespace this script makes, whose resolver
# (/etc/netns/<ns>/resolv.conf, which `ip netns exec` mounts over /etc/resolv.conf) is a tiny DNS server
# (dns.py) answering `api.soulbox.test` and `*.soulbox.test` with the server's address on the namespace's veth.
# The server serves HTTPS itself on that address, port 443, with a certificate for `*.soulbox.test` and
# `api.soulbox.test` from a CA this script makes; the SDK trusts it through SSL_CERT_FILE (Python's ssl and
# the SDK's Rust HTTP client, pyqwest/rustls, both read it). soulbox.test is reserved (RFC 6761): never on real
# DNS. Its own server (not tests/e2e's), because that listens on loopback without TLS.
#
# Usage (as root, under the heavy-suite lock like tests/e2e):
#   flock /tmp/soulbox-heavy.lock tests/domain/run.sh [pytest args]
# Environment:
#   SOULBOX_DOMAIN_DIR=/var/tmp/soulbox-domain       data dir (store, sandboxes, the test CA)
#   SOULBOX_TEMPLATE_DIR=/var/tmp/soulbox-e2e/node   shared built templates (the e2e suite's: no second base
#                                                    build); set it empty to keep templates in the data dir
#   SOULBOX_DOMAIN_PREFIX=sbdom, SOULBOX_DOMAIN_POOL=10.238.0.0/16   runtime prefix and address pool
#   SOULBOX_DOMAIN_NET=10.239.0    the client namespace's /30: .1 the server (host side), .2 the client
#   SOULBOX_DOMAIN_NETNS=e2bdomain the namespace's name (its veths: <name>0 on the host, <name>1 inside)
#   SOULBOX_E2E_SKIP_BUILD=1       use the existing target/debug/soulbox and static envd
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=../compat/envd-lib.sh
. "$ROOT/tests/compat/envd-lib.sh" # log, die, ensure_venv

PYTHON="${PYTHON:-python3}"
DATA_DIR="${SOULBOX_DOMAIN_DIR:-/var/tmp/soulbox-domain}"
PREFIX="${SOULBOX_DOMAIN_PREFIX:-sbdom}"
POOL="${SOULBOX_DOMAIN_POOL:-10.238.0.0/16}"
NET="${SOULBOX_DOMAIN_NET:-10.239.0}"
NS="${SOULBOX_DOMAIN_NETNS:-e2bdomain}"
export SOULBOX_TEMPLATE_DIR="${SOULBOX_TEMPLATE_DIR-/var/tmp/soulbox-e2e/node}"
[ -n "$SOULBOX_TEMPLATE_DIR" ] || unset SOULBOX_TEMPLATE_DIR
DOMAIN=soulbox.test
SERVER_IP="$NET.1"
CLIENT_IP="$NET.2"
MAX_LIFETIME_S=600
SERVER_LOG="$ROOT/target/domain/server.log"
SOULBOX="$ROOT/target/debug/soulbox"
ENVD="$ROOT/target/static/x86_64-unknown-linux-gnu/release/soulbox-envd"
TLS_DIR="$DATA_DIR/test-ca"
DNS_PID=""

[ "$(id -u)" = 0 ] || die "must run as root (the node runtime and the test's namespace need it)"

# shellcheck source=../lib/server.sh
. "$ROOT/tests/lib/server.sh" # api, kill_all_sandboxes, shutdown_server, check_leaks

# After the server stops (trap_suite_exit): the fake DNS, the test's namespace and its resolv.conf.
suite_cleanup() {
  [ -z "$DNS_PID" ] || { kill "$DNS_PID" 2>/dev/null; wait "$DNS_PID" 2>/dev/null; }
  ip netns delete "$NS" 2>/dev/null
  ip link delete "${NS}0" 2>/dev/null
  rm -rf "/etc/netns/$NS"
  if ip netns list | grep -qx "$NS\( .*\)\?" || [ -e "/etc/netns/$NS" ]; then
    echo "the test namespace $NS or /etc/netns/$NS is left" >&2
    return 1
  fi
}
trap_suite_exit

build_server_unless "${SOULBOX_E2E_SKIP_BUILD:-}"
ensure_venv latest
VENV_PY="$ROOT/tests/compat/.venv-latest/bin/python"

# The test CA and the server's certificate: *.soulbox.test, api.soulbox.test, and the address (for this
# script's own API calls from the host).
mkdir -p "$TLS_DIR"
if [ ! -s "$TLS_DIR/cert.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -subj "/CN=SoulBox domain test CA" \
    -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=*.$DOMAIN" \
    -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.csr" 2>/dev/null
  openssl x509 -req -in "$TLS_DIR/cert.csr" -CA "$TLS_DIR/ca.pem" -CAkey "$TLS_DIR/ca.key" -CAcreateserial -days 3650 \
    -extfile <(printf 'subjectAltName=DNS:*.%s,DNS:api.%s,IP:%s\nextendedKeyUsage=serverAuth' "$DOMAIN" "$DOMAIN" "$SERVER_IP") \
    -out "$TLS_DIR/cert.pem" 2>/dev/null
fi
export SSL_CERT_FILE="$TLS_DIR/ca.pem" # this script's own calls (tests/lib/server.sh's `api`) check it too

# The client's namespace: a veth pair, the server's side in the host namespace, DNS inside.
ip netns delete "$NS" 2>/dev/null || true
ip link delete "${NS}0" 2>/dev/null || true
ip netns add "$NS"
ip link add "${NS}0" type veth peer name "${NS}1" netns "$NS"
ip addr add "$SERVER_IP/30" dev "${NS}0"
ip link set "${NS}0" up
ip -n "$NS" addr add "$CLIENT_IP/30" dev "${NS}1"
ip -n "$NS" link set "${NS}1" up
ip -n "$NS" link set lo up
mkdir -p "/etc/netns/$NS"
printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:2\n' >"/etc/netns/$NS/resolv.conf"
# No /etc/hosts entry could answer a wildcard; the namespace's own hosts file keeps the host's names out.
printf '127.0.0.1 localhost\n' >"/etc/netns/$NS/hosts"
mkdir -p "$(dirname "$SERVER_LOG")"
ip netns exec "$NS" "$PYTHON" "$HERE/dns.py" 127.0.0.1 "$DOMAIN" "$SERVER_IP" >"$(dirname "$SERVER_LOG")/dns.log" 2>&1 &
DNS_PID=$!

# The server: TLS on the veth address, port 443, the domain set.
: >"$SERVER_LOG"
cat >"$DATA_DIR/config.toml" <<TOML
warm_pool = 1
[http]
tls_cert = "$TLS_DIR/cert.pem"
tls_key = "$TLS_DIR/key.pem"
TOML
out="$("$SOULBOX" --data-dir "$DATA_DIR" keys create --name "domain-$(date +%s)")"
KEY_ID="$(sed -n 's/^created key \([^ ]*\) .*/\1/p' <<<"$out")"
API_KEY="$(sed -n 's/^export E2B_API_KEY=\([^ ]*\).*/\1/p' <<<"$out")"
[ -n "$API_KEY" ] || die "could not create an API key: $out"
API_URL="https://$SERVER_IP"
log "starting soulbox server on $API_URL (data dir $DATA_DIR, log $SERVER_LOG)"
SOULBOX_LOG="${SOULBOX_LOG:-info}" "$SOULBOX" --data-dir "$DATA_DIR" server --listen "$SERVER_IP:443" \
  --envd-path "$ENVD" --domain "$DOMAIN" --max-lifetime-s "$MAX_LIFETIME_S" \
  --prefix "$PREFIX" --network-pool "$POOL" --runtime "${SOULBOX_RUNTIME:-runc}" >>"$SERVER_LOG" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 1800); do
  curl -sf --noproxy '*' --cacert "$TLS_DIR/ca.pem" --max-time 2 "$API_URL/health" >/dev/null && break
  kill -0 "$SERVER_PID" 2>/dev/null || { tail -50 "$SERVER_LOG" >&2; SERVER_PID=""; die "server exited during start"; }
  sleep 0.2
done
grep -q '^SoulBox is running on https://' "$SERVER_LOG" || { tail -50 "$SERVER_LOG" >&2; die "the server does not say it serves HTTPS"; }

log "e2b SDK in namespace $NS with only E2B_DOMAIN=$DOMAIN and E2B_API_KEY"
cd "$HERE"
ip netns exec "$NS" env -i PATH="$PATH" HOME="${HOME:-/root}" E2B_DOMAIN="$DOMAIN" E2B_API_KEY="$API_KEY" \
  SSL_CERT_FILE="$TLS_DIR/ca.pem" PYTHONDONTWRITEBYTECODE=1 \
  "$VENV_PY" -m pytest -v test_domain.py "$@"
