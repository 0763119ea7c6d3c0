#!/usr/bin/env bash
# Property-based run of the API's OpenAPI document (schemathesis, every check) against
# `pixpress serve` on a free loopback port with an API key; fails on any finding.
# Exceptions, with their reasons, are in schemathesis.toml. Only loopback traffic.
#   scripts/schemathesis.sh [--seed N] [--max-examples N]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
ST_VENV="$HOME/.cache/pixpress/schemathesis-venv"
[ -x "$ST_VENV/bin/python" ] || python3 -m venv "$ST_VENV"
[ -x "$ST_VENV/bin/st" ] || "$ST_VENV/bin/python" -m pip install -q --disable-pip-version-check "schemathesis==4.32.5"
seed=20261206
examples=50
while [ $# -gt 0 ]; do
  case "$1" in
    --seed) seed="$2"; shift 2 ;;
    --max-examples) examples="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
cargo build --quiet -p pixpress-cli --bin pixpress
pixpress="$CARGO_TARGET_DIR/debug/pixpress"
data="$(mktemp -d)"
key="$("$pixpress" keys create --tenant shop --data-dir "$data" --json \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["api_key"])')"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$pixpress" serve --addr "127.0.0.1:$port" --data-dir "$data" > "$data/serve.log" 2>&1 &
serve_pid=$!
trap 'kill "$serve_pid" 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 1 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
  sleep 0.1
done
"$ST_VENV/bin/st" --config-file schemathesis.toml run "http://127.0.0.1:$port/openapi.json" \
  --seed "$seed" --max-examples "$examples" --no-color \
  -H "Authorization: Bearer $key"
