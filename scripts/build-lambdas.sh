#!/usr/bin/env bash
# Builds the release arm64 Lambda bootstraps with cargo-lambda (from PyPI, which brings
# zig for the cross-link) and prints their sizes. Slow on 2 cores (~6 minutes cold), so it is
# not part of per-commit CI. Output: $CARGO_TARGET_DIR/lambda/<function>/bootstrap.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
pixpress_require_tools
VENV="$HOME/.cache/pixpress/lambda-venv"
[ -x "$VENV/bin/cargo-lambda" ] || { python3 -m venv "$VENV"; "$VENV/bin/pip" install -q cargo-lambda==1.9.2; }
export PATH="$VENV/bin:$PATH"
rustup target list --installed | grep -q '^aarch64-unknown-linux-gnu$' || rustup target add aarch64-unknown-linux-gnu
cargo lambda build --release --arm64 \
  -p pixpress-api -p pixpress-s3-ingest -p pixpress-row-worker -p pixpress-row-dead-letter -p pixpress-completion-notifier
for f in api s3-ingest row-worker row-dead-letter completion-notifier; do
  printf '%-22s %s bytes\n' "$f" "$(stat -c %s "$CARGO_TARGET_DIR/lambda/$f/bootstrap")"
done
