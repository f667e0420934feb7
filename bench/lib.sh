# shellcheck shell=bash
# Shared by the bench/*.sh scripts that run a release `soulbox server` of their own on a loopback port. The caller
# sets ROOT (and runs from it), DATA (the server's data dir), PORT and VENV (a Python with the e2b SDK); BIN is set by
# bench_build or by the caller. Optional SERVER_ENV: an array of VAR=value for the server's environment.

# bench_build: the static envd beside the release server, which is built; BIN names it.
bench_build() {
  scripts/build-envd.sh >/dev/null
  cargo build --release -p soulbox-cli
  install -m 0755 target/static/x86_64-unknown-linux-gnu/release/soulbox-envd target/release/soulbox-envd-static
  BIN=target/release/soulbox
}

# bench_kill_all: kills every sandbox the server lists; the listing pages by 100, so it lists again until nothing
# is left (bounded, in case kills keep failing).
bench_kill_all() {
  [ -n "${KEY:-}" ] || return 0
  local ids id
  for _ in $(seq 1 50); do
    ids="$(curl -s -H "X-API-Key: $KEY" "http://127.0.0.1:$PORT/v2/sandboxes?limit=100" |
      "$VENV/bin/python" -c 'import json,sys; print(" ".join(s["sandboxID"] for s in json.load(sys.stdin)))' || true)"
    [ -n "$ids" ] || break
    for id in $ids; do curl -s -o /dev/null -X DELETE -H "X-API-Key: $KEY" "http://127.0.0.1:$PORT/sandboxes/$id"; done
  done
}

# bench_stop: kills what the server runs, then the server.
bench_stop() {
  [ -n "${SERVER:-}" ] || return 0
  bench_kill_all
  kill "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  SERVER=""
}

# bench_start LOG [server flags...]: the server (SERVER_ENV in its environment) until its key line is printed; KEY
# is an API key for it (the first admin key, or a new one).
bench_start() {
  local log="$1"
  shift
  : >"$log"
  env "${SERVER_ENV[@]}" "$BIN" --data-dir "$DATA" server --listen "127.0.0.1:$PORT" "$@" >"$log" 2>&1 &
  SERVER=$!
  for _ in $(seq 1 1200); do
    grep -q '^export E2B_API_KEY' "$log" && break
    kill -0 "$SERVER" || { cat "$log"; exit 1; }
    sleep 0.5
  done
  # Off a terminal the first admin key is written to <data-dir>/admin-key, not printed.
  KEY="$(cat "$DATA/admin-key" 2>/dev/null || true)"
  [ -n "$KEY" ] || KEY="$("$BIN" --data-dir "$DATA" keys create --name bench | grep -o 'e2b_[0-9a-f]*')"
}
