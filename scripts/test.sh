#!/usr/bin/env bash
# Runs every test (unit, handler, use-case, fetcher, end-to-end). Only loopback traffic.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
pixpress_require_tools
cargo test --workspace --all-targets "$@"
