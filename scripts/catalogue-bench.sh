#!/usr/bin/env bash
# Catalogue-scale figures (not a test): validation and ingest of a 1,000,000-row CSV, 100,000
# rows end to end through `pixpress run`, and a catalogue through the AWS adapters on an
# emulator. Only loopback traffic. Prints tables.
#   scripts/catalogue-bench.sh [--ingest-rows N] [--run-rows N] [--emulator-rows N]
#                              [--emulator moto|ministack]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
pixpress_require_tools
INGEST_ROWS=1000000
RUN_ROWS=100000
# The emulators slow down with queue depth and table size (README, "Catalogue scale"):
# 2,000 rows take minutes; 100,000 would take hours (ministack) or days (moto).
EMULATOR_ROWS=2000
EMULATOR=ministack
while [ $# -gt 0 ]; do
  case "$1" in
    --ingest-rows) INGEST_ROWS=$2; shift 2 ;;
    --run-rows) RUN_ROWS=$2; shift 2 ;;
    --emulator-rows) EMULATOR_ROWS=$2; shift 2 ;;
    --emulator) EMULATOR=$2; shift 2 ;;
    *) echo "usage: scripts/catalogue-bench.sh [--ingest-rows N] [--run-rows N] [--emulator-rows N] [--emulator moto|ministack]" >&2; exit 2 ;;
  esac
done
[ -x /usr/bin/time ] || { echo "scripts/catalogue-bench.sh needs GNU time for peak RSS: apt-get install time" >&2; exit 1; }
BASE="${PIXPRESS_CORPUS:-$HOME/.cache/pixpress-corpus}"
[ -s "$BASE/product100.txt" ] || BASE="$BASE" bash bench/corpus/build_corpus.sh
VENV="$HOME/.cache/pixpress/bench-venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c "import PIL" 2>/dev/null || "$VENV/bin/pip" install -q pillow==13.0.0
cargo build --quiet --release -p pixpress-cli --bin pixpress -p pixpress-bench --bin pixpress-catalogue-bench
BIN="$CARGO_TARGET_DIR/release"
PY="$VENV/bin/python"
WORK=$(mktemp -d)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

echo "== validation and ingest, $INGEST_ROWS rows (embedded backends)"
"$BIN/pixpress-catalogue-bench" --rows "$INGEST_ROWS" --dir "$WORK/ingest"
rm -rf "$WORK/ingest"

# Eight product photos scaled to 320 px, served under distinct URLs.
mkdir -p "$WORK/thumbs"
"$PY" - "$BASE/product100" "$WORK/thumbs" <<'PYEOF'
import glob, os, sys
from PIL import Image
for i, path in enumerate(sorted(glob.glob(os.path.join(sys.argv[1], "*.jpg")))[:8]):
    image = Image.open(path).convert("RGB")
    image.thumbnail((320, 320))
    image.save(os.path.join(sys.argv[2], f"thumb_{i}.jpg"), quality=90)
PYEOF
"$PY" bench/origin.py --dir "$WORK/thumbs" > "$WORK/origin.out" &
PIDS+=($!)
for _ in $(seq 50); do grep -q '^port' "$WORK/origin.out" 2>/dev/null && break; sleep 0.1; done
PORT=$(awk '/^port/{print $2}' "$WORK/origin.out")
catalogue() { # rows file
  python3 - "$1" "$PORT" > "$2" <<'PYEOF'
import sys
rows, port = int(sys.argv[1]), sys.argv[2]
print("S. No.,Product Name,Input Image Urls")
for i in range(1, rows + 1):
    print(f"{i},Product {i},http://127.0.0.1:{port}/img/{i}/thumb_{i % 8}.jpg")
PYEOF
}
summarise() { # label rows time-file out-file
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/{print $2}' "$3")
  rss=$(awk -F': ' '/Maximum resident/{printf "%.0f", $2/1024}' "$3")
  echo "| $1 | $2 | $wall | $(grep -o '[0-9.]* images/s' "$4" | head -1) | $rss MB |"
}

echo; echo "== pixpress run, $RUN_ROWS rows end to end (embedded backends)"
catalogue "$RUN_ROWS" "$WORK/run.csv"
/usr/bin/time -v "$BIN/pixpress" run "$WORK/run.csv" --allow-loopback --out "$WORK/run" \
  > "$WORK/run.out" 2> "$WORK/run.time"
cat "$WORK/run.out"
# The same first 2,000 rows as one small request, through POST /uploads.
head -2001 "$WORK/run.csv" > "$WORK/small.csv"
"$BIN/pixpress" run "$WORK/small.csv" --allow-loopback --out "$WORK/small" > /dev/null
python3 - "$WORK/run.csv" "$WORK/run/output.csv" "$WORK/small/output.csv" <<'PYEOF'
import csv, re, sys
inputs = list(csv.reader(open(sys.argv[1], newline="")))
big = list(csv.reader(open(sys.argv[2], newline="")))
small = list(csv.reader(open(sys.argv[3], newline="")))
assert len(big) == len(inputs), (len(big), len(inputs))
aligned = all(o[:3] == i[:3] and len(o[3].split(",")) == len(i[2].split(",")) for o, i in zip(big[1:], inputs[1:]))
# Output URLs name their request and data directory: compare with those masked.
mask = lambda row: [re.sub(r"file://[^,]*/images/default/[0-9a-f-]+/", "IMAGES/", c) for c in row]
same = [mask(r) for r in big[:len(small)]] == [mask(r) for r in small]
print(f"output CSV: {len(big) - 1} rows in input order: {aligned}; first {len(small) - 1} rows identical to a small request's: {same}")
PYEOF

echo; echo "== the AWS adapters on $EMULATOR, $EMULATOR_ROWS rows end to end"
catalogue "$EMULATOR_ROWS" "$WORK/emulator.csv"
EPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
case "$EMULATOR" in
  moto)
    "$HOME/.cache/pixpress/emulator-venv/bin/moto_server" -H 127.0.0.1 -p "$EPORT" > "$WORK/emulator.log" 2>&1 &
    PIDS+=($!) ;;
  ministack)
    GATEWAY_PORT=$EPORT BIND_HOST=127.0.0.1 IOT_MTLS_ENABLED=false TMPDIR=$WORK \
      "$HOME/.cache/pixpress/ministack-venv/bin/ministack" > "$WORK/emulator.log" 2>&1 &
    PIDS+=($!) ;;
esac
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$EPORT) 2>/dev/null && break; sleep 0.2; done
/usr/bin/time -v "$BIN/pixpress" run "$WORK/emulator.csv" --backend emulator \
  --endpoint "http://127.0.0.1:$EPORT" --allow-loopback --out "$WORK/emulator" \
  > "$WORK/emulator.out" 2> "$WORK/emulator.time"
cat "$WORK/emulator.out"

echo
echo "| run | rows | wall | rate | peak RSS (pixpress) |"
echo "|---|---|---|---|---|"
summarise "embedded backends" "$RUN_ROWS" "$WORK/run.time" "$WORK/run.out"
summarise "AWS adapters on $EMULATOR" "$EMULATOR_ROWS" "$WORK/emulator.time" "$WORK/emulator.out"
