#!/usr/bin/env bash
# Runs every test (unit, handler, use-case, fetcher, emulator, end-to-end). Only loopback traffic.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
pixpress_require_tools
pixpress_require_browser
# Emulators, pinned, each in a venv under ~/.cache/pixpress; the tests start them on free
# loopback ports and stop them by process id.
# - moto server (S3, SQS, DynamoDB + Streams): the AWS adapter contract suite and the pipeline
#   through the AWS adapters.
VENV="$HOME/.cache/pixpress/emulator-venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
[ -x "$VENV/bin/moto_server" ] || "$VENV/bin/python" -m pip install -q --disable-pip-version-check "moto[server]==5.2.5"
export MOTO_SERVER="$VENV/bin/moto_server"
# - ministack (runs the real bootstrap binaries behind HTTP API, SQS, DynamoDB-stream and S3
#   triggers) with aws-sam-translator + boto3 for scripts/emulator_stack.py.
MS_VENV="$HOME/.cache/pixpress/ministack-venv"
[ -x "$MS_VENV/bin/python" ] || python3 -m venv "$MS_VENV"
[ -x "$MS_VENV/bin/ministack" ] && "$MS_VENV/bin/python" -c "import samtranslator, boto3" 2>/dev/null \
  || "$MS_VENV/bin/python" -m pip install -q --disable-pip-version-check "ministack==1.5.33" "aws-sam-translator==1.115.0"
export MINISTACK="$MS_VENV/bin/ministack"
# The patched Huffman statistics pass of the vendored libjpeg-turbo counts what the original
# counts (SIMD and plain C paths, 2 million random blocks).
python3 vendor/turbojpeg-sys/patches/check-htest.py
# The end-to-end emulator test deploys the functions' own binaries: build them first.
cargo build --workspace --bins
cargo test --workspace --all-targets "$@"
# Every output format opens in Pillow (libwebp, libavif), decoders independent of the engine.
PIL_VENV="$HOME/.cache/pixpress/bench-venv"
[ -x "$PIL_VENV/bin/python" ] || python3 -m venv "$PIL_VENV"
"$PIL_VENV/bin/python" -c "import PIL; assert PIL.__version__ == '13.0.0'" 2>/dev/null \
  || "$PIL_VENV/bin/python" -m pip install -q --disable-pip-version-check "pillow==13.0.0"
"$PIL_VENV/bin/python" scripts/check_decoders.py --bench "$CARGO_TARGET_DIR/debug/pixpress-bench" \
  cli/assets/demo/*.jpg cli/assets/demo/*.webp
# The OpenAPI document against the running API: a property-based run (schemathesis, every
# check) must find nothing.
scripts/schemathesis.sh
