#!/usr/bin/env bash
# Runs every test (unit, handler, use-case, fetcher, end-to-end). Only loopback traffic.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
pixpress_require_tools
# moto server (S3, SQS, DynamoDB + Streams) for the AWS adapter contract tests, pinned, in a venv;
# the tests start it on a free loopback port and stop it by PID.
VENV="$HOME/.cache/pixpress/emulator-venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
[ -x "$VENV/bin/moto_server" ] || "$VENV/bin/python" -m pip install -q --disable-pip-version-check "moto[server]==5.2.5"
export MOTO_SERVER="$VENV/bin/moto_server"
cargo test --workspace --all-targets "$@"
