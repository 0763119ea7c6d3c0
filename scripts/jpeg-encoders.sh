#!/usr/bin/env bash
# Bytes and CPU of jpegli and mozjpeg at the SSIMULACRA2 score of pixpress's JPEG q50, on the
# product set (bench/jpeg_encoders.py). Builds the corpus (once), a venv with pinned pyjpegli,
# jpeglib (mozjpeg 4.0.3) and Pillow, and the release scorer.
#   scripts/jpeg-encoders.sh [--limit N] [--json out.json]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
pixpress_require_tools
BASE="${PIXPRESS_CORPUS:-$HOME/.cache/pixpress-corpus}"
if [ ! -s "$BASE/product100.txt" ]; then
  BASE="$BASE" bash bench/corpus/build_corpus.sh
fi
VENV="$HOME/.cache/pixpress/jpeg-study-venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q pillow==13.0.0 pyjpegli==0.3.2 jpeglib==1.0.2 numpy
cargo build --quiet --release -p pixpress-bench --bin pixpress-ssimulacra2
exec "$VENV/bin/python" bench/jpeg_encoders.py --list "$BASE/product100.txt" \
  --scorer "$CARGO_TARGET_DIR/release/pixpress-ssimulacra2" "$@"
