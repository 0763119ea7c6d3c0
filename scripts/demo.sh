#!/usr/bin/env bash
# Runs the self-contained demo: bundled photos served on loopback, the whole pipeline in one
# process, a verified webhook. Usage: scripts/demo.sh [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
pixpress_require_tools
cargo build --quiet -p pixpress-cli --bin pixpress
exec "$CARGO_TARGET_DIR/debug/pixpress" demo "$@"
