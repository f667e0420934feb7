# Sourced by scripts that need a `soulbox server` of their own on a free loopback port (the SDK tests, the SDK
# benchmark). start_local_server BIN DATA_DIR PREFIX POOL LOG [extra server args...] creates an (admin) API key,
# starts the server in the background and returns once /health answers; it sets API, KEY, KEY_ID and SERVER_PID.
# The first start on an empty data dir builds `base` (~1 min). The caller stops SERVER_PID and revokes KEY_ID.
start_local_server() {
  local bin="$1" data_dir="$2" prefix="$3" pool="$4" log="$5" port
  shift 5
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
  API="http://127.0.0.1:$port"
  # An admin key: the SDK and CLI tests list nodes too.
  local created
  created="$("$bin" --data-dir "$data_dir" keys create --name "$prefix" --admin)"
  KEY="$(sed -n 's/^export E2B_API_KEY=//p' <<<"$created")"
  KEY_ID="$(sed -n 's/^created key \([^ ]*\) .*/\1/p' <<<"$created")"
  [ -n "$KEY" ] || { echo "could not create an API key" >&2; return 1; }
  "$bin" --data-dir "$data_dir" server --listen "127.0.0.1:$port" --prefix "$prefix" --network-pool "$pool" \
    --envd-path "$ROOT/target/static/x86_64-unknown-linux-gnu/release/soulbox-envd" "$@" >"$log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 600); do
    if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$API/health" 2>/dev/null; then
      return 0
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 20 "$log" >&2; return 1; }
    sleep 0.5
  done
  echo "server did not answer /health within 5 minutes (log: $log)" >&2
  return 1
}
