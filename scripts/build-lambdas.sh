#!/usr/bin/env bash
# Builds the release arm64 Lambda bootstraps with cargo-lambda (from PyPI, which brings zig for
# the cross-link), one function at a time as `sam build` does, so each links only the crates
# it depends on (only the row-worker links the compression engine), and prints each bootstrap's
# size and zipped size. Slow on 2 cores (~20 minutes cold), so it is not part of per-commit CI.
# Output: $CARGO_TARGET_DIR/lambda/<function>/bootstrap.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
pixpress_require_tools
VENV="$HOME/.cache/pixpress/lambda-venv"
[ -x "$VENV/bin/cargo-lambda" ] || { python3 -m venv "$VENV"; "$VENV/bin/pip" install -q cargo-lambda==1.9.2; }
export PATH="$VENV/bin:$PATH"
rustup target list --installed | grep -q '^aarch64-unknown-linux-gnu$' || rustup target add aarch64-unknown-linux-gnu
FUNCTIONS=(api s3-ingest row-dead-letter completion-notifier webhook-sender sweeper row-worker)
for f in "${FUNCTIONS[@]}"; do
  cargo lambda build --release --arm64 -p "pixpress-$f"
done
printf '%-22s %12s %12s\n' function bytes zipped
for f in "${FUNCTIONS[@]}"; do
  boot="$CARGO_TARGET_DIR/lambda/$f/bootstrap"
  zipped=$(python3 -c "import io,sys,zipfile; b=io.BytesIO(); z=zipfile.ZipFile(b,'w',zipfile.ZIP_DEFLATED); z.write(sys.argv[1],'bootstrap'); z.close(); print(len(b.getvalue()))" "$boot")
  printf '%-22s %12s %12s\n' "$f" "$(stat -c %s "$boot")" "$zipped"
done
