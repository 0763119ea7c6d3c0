#!/usr/bin/env bash
# Interleaved benchmark of pixpress against Pillow and libvips on the real-photo corpus.
# Builds the corpus (Debian packages + scikit-image wheel, about 2 minutes, once), a venv with
# pinned Pillow, pyvips (+ its libvips wheel) and scikit-image, and the release bench binary.
#   scripts/bench.sh [--rounds N] [--sets product100 corpus] [--ssim-sample N]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
pixpress_require_tools
BASE="${PIXPRESS_CORPUS:-$HOME/.cache/pixpress-corpus}"
if [ ! -s "$BASE/corpus.txt" ] || [ ! -s "$BASE/product100.txt" ]; then
  BASE="$BASE" bash bench/corpus/build_corpus.sh
fi
VENV="$HOME/.cache/pixpress/bench-venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q pillow==13.0.0 pyvips==3.2.0 pyvips-binary==8.18.7 scikit-image==0.26.0 numpy
cargo build --quiet --release -p pixpress-bench
exec "$VENV/bin/python" bench/compare.py --base "$BASE" --bench "$CARGO_TARGET_DIR/release/pixpress-bench" "$@"
