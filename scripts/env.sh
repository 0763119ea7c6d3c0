# Sourced by the project scripts: shared environment for builds, tests and local runs.
# An AWS SDK without a region or credentials probes the EC2 metadata service at
# 169.254.169.254; every run here sets them explicitly so that can never happen.
export AWS_EC2_METADATA_DISABLED=true
export AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
# Builds reuse one target directory outside the clone, so a fresh clone does not rebuild the world.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pixpress/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# CI builds a fresh clone each time: incremental caches would only pile up, one set per clone
# path, in the shared target directory.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"; fi

# The vendored libjpeg-turbo builds with cmake and nasm (its SIMD code is required).
pixpress_require_tools() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo is not installed; install the Rust toolchain (rustup, Rust >= 1.88) and retry" >&2
    exit 1
  fi
  local missing=()
  command -v cc >/dev/null 2>&1 || missing+=(build-essential)
  command -v cmake >/dev/null 2>&1 || missing+=(cmake)
  command -v nasm >/dev/null 2>&1 || missing+=(nasm)
  pixpress_apt_install "build packages" "${missing[@]}"
}

# Installs Debian packages when missing ones are named: with apt-get as root, else stops saying
# what to install. `pixpress_apt_install WHAT PACKAGE…` (nothing to do without packages).
pixpress_apt_install() {
  local what="$1"
  shift
  [ $# -gt 0 ] || return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing $what: $*" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
  else
    echo "error: missing $what: $*; install them first: sudo apt-get install -y $*" >&2
    exit 1
  fi
}

# The browser test drives the web page in headless Chromium through chromedriver.
pixpress_require_browser() {
  local missing=()
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
  pixpress_apt_install "browser packages" "${missing[@]}"
}
