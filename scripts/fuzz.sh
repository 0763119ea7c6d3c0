#!/usr/bin/env bash
# Fuzzes the CSV parser, the URL guard and bytes → decode → encode, each for a bounded time,
# and prints executions and findings per target.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      (default 60)
#
# Needs the nightly toolchain (libFuzzer and the sanitizers); installs cargo-fuzz if missing.
# Seeds: the demo photos and the sample CSVs. A crashing input lands in
# fuzz/artifacts/<target>/; check it in as a regression test (see crates/*/src/*tests*).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
SECONDS_PER_TARGET="${1:-60}"
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzzing needs the nightly toolchain: rustup toolchain install nightly" >&2
  exit 1
fi
command -v cargo-fuzz >/dev/null || cargo +stable install cargo-fuzz --locked --quiet
export CARGO_TARGET_DIR="$HOME/.cache/pixpress/fuzz-target"
mkdir -p "$CARGO_TARGET_DIR"
CORPUS="$HOME/.cache/pixpress/fuzz-corpus"
mkdir -p "$CORPUS/csv_parser" "$CORPUS/url_guard" "$CORPUS/decode_encode"
cp -n cli/assets/demo/*.jpg cli/assets/demo/*.webp "$CORPUS/decode_encode/" 2>/dev/null || true
for f in events/*.csv; do
  [ -f "$f" ] && cp -n "$f" "$CORPUS/csv_parser/"
done
printf 'S. No.,Product Name,Input Image Urls\n1,Shirt,"https://shop.example/a.jpg, https://shop.example/b.png"\n' \
  > "$CORPUS/csv_parser/sample.csv"
printf 'https://shop.example/a.jpghttp://[::ffff:a9fe:a9fe]:8080/' > "$CORPUS/url_guard/redirect"
printf 'http://user:pw@10.0.0.1:22/x' > "$CORPUS/url_guard/credentials"
printf '\n%-14s %12s %10s %8s\n' target executions exec/s findings
status=0
for target in csv_parser url_guard decode_encode; do
  log="$CARGO_TARGET_DIR/$target.log"
  mkdir -p "fuzz/artifacts/$target"
  before=$(find "fuzz/artifacts/$target" -type f | wc -l)
  set +e
  cargo +nightly fuzz run --fuzz-dir fuzz "$target" "$CORPUS/$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 -rss_limit_mb=4096 \
    -timeout=30 >"$log" 2>&1
  rc=$?
  set -e
  after=$(find "fuzz/artifacts/$target" -type f | wc -l)
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  rate=$(grep -o 'exec/s: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo '?')
  printf '%-14s %12s %10s %8s\n' "$target" "$execs" "$rate" "$((after - before))"
  if [ "$rc" -ne 0 ]; then
    echo "  $target stopped with status $rc; see $log and fuzz/artifacts/$target/" >&2
    status=1
  fi
done
exit "$status"
