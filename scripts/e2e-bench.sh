#!/usr/bin/env bash
# End-to-end benchmark of `pixpress run` against the seed-style Python peer, as a user times
# it: the whole pipeline, images served on loopback by the origin matrix of bench/e2e.py
# (instant; 100 ms and 300 ms before every answer; hit/miss; log-normal latency; Python's
# threaded http.server over HTTP/1.0 and HTTP/1.1; a rate-limiting origin; a dripping URL among
# good ones; resets), interleaved round by round. Then 10,000 rows of one small JPEG, the
# scaling curve (100, 1,000, 5,000 images) and one row-worker invocation on one core. Prints
# tables; nothing here is a test. pixpress scores every image (SSIMULACRA2) as it does by
# default; --no-score runs the pipeline without, doing the peer's work only (the row-worker
# invocation at the end always scores, as a deployed worker does by default).
#   scripts/e2e-bench.sh [--rounds N] [--count N] [--origins a,b,…] [--no-score]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
pixpress_require_tools
ROUNDS=3
COUNT=500
ORIGINS=instant,100ms,300ms,hitmiss100,lognormal,threaded10,threaded11,ratelimit8,drip,reset10
SCORE=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --count) COUNT=$2; shift 2 ;;
    --origins) ORIGINS=$2; shift 2 ;;
    --no-score) SCORE=(--no-score); shift ;;
    *) echo "usage: scripts/e2e-bench.sh [--rounds N] [--count N] [--origins a,b,…] [--no-score]" >&2; exit 2 ;;
  esac
done
BASE="${PIXPRESS_CORPUS:-$HOME/.cache/pixpress-corpus}"
[ -s "$BASE/product100.txt" ] || BASE="$BASE" bash bench/corpus/build_corpus.sh
VENV="$HOME/.cache/pixpress/bench-venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c "import PIL" 2>/dev/null || "$VENV/bin/pip" install -q pillow==13.0.0
cargo build --quiet --release -p pixpress-cli --bin pixpress
cargo build --quiet --release -p pixpress-bench
BIN="$CARGO_TARGET_DIR/release"
PY="$VENV/bin/python"
IMAGES="$BASE/product100"
COMMON=(--images "$IMAGES" --pixpress "$BIN/pixpress" --bench "$BIN/pixpress-bench" --peer-python "$PY" ${SCORE[@]+"${SCORE[@]}"})

echo "== origin matrix ($COUNT product photos, $ROUNDS interleaved rounds)"
"$PY" bench/e2e.py "${COMMON[@]}" --origins "$ORIGINS" --counts "$COUNT" --rounds "$ROUNDS"

echo; echo "== 10,000 rows of one small JPEG"
"$PY" bench/e2e.py "${COMMON[@]}" --small --origins instant,hitmiss40,threaded11 --counts 10000 --rounds 1

echo; echo "== scaling (instant origin)"
"$PY" bench/e2e.py "${COMMON[@]}" --origins instant --counts 100,1000,5000 --rounds 1

echo; echo "== one row-worker invocation, 10 rows × 2 images, one core, origin at 100 ms (5 runs)"
"$PY" bench/origin.py --dir "$IMAGES" --delay-ms 100 > /tmp/pixpress-origin.$$ &
ORIGIN=$!
trap 'kill $ORIGIN 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q port /tmp/pixpress-origin.$$ 2>/dev/null && break; sleep 0.1; done
PORT=$(awk '{print $2}' /tmp/pixpress-origin.$$)
for _ in 1 2 3 4 5; do
  taskset -c 0 "$BIN/pixpress-worker-bench" --base "http://127.0.0.1:$PORT" --dir "$IMAGES"
done
kill $ORIGIN; rm -f /tmp/pixpress-origin.$$
