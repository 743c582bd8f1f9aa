#!/usr/bin/env bash
# berth's test command: installs what the tests need (idempotent, from Debian's
# packages), then runs rustfmt, clippy and every test. Works from a fresh clone on a
# fresh Debian machine with the Rust toolchain; needs root or sudo for apt.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(docker-registry skopeo postgresql runc passt nftables iproute2 busybox-static e2fsprogs ca-certificates python3 python3-venv chromium systemd util-linux pebble)
# Node.js and npm for the browser tests' Playwright: the machine's own when it has
# them, Debian's otherwise.
command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# moto (AWS KMS and Secrets Manager on loopback, for the AWS tests), pinned, from PyPI
# into its own virtualenv.
moto_version=5.2.5
moto_dir="${BERTH_MOTO_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/berth/moto-$moto_version}"
if [ ! -x "$moto_dir/bin/moto_server" ]; then
  echo "installing moto $moto_version into $moto_dir"
  python3 -m venv "$moto_dir"
  "$moto_dir/bin/pip" install -q --disable-pip-version-check "moto[server]==$moto_version"
fi
export BERTH_MOTO_SERVER="$moto_dir/bin/moto_server"

# Playwright (its core, driving Debian's chromium; no browser download) and axe-core
# for the dashboard's browser tests, pinned by the lockfile.
if [ ! -d crates/server/tests/dashboard/node_modules/playwright-core ] || [ crates/server/tests/dashboard/package-lock.json -nt crates/server/tests/dashboard/node_modules ]; then
  echo "installing the browser tests' npm packages"
  npm ci --prefix crates/server/tests/dashboard --no-audit --no-fund --loglevel=error
fi

# Registry traffic in tests goes to loopback only; keep any proxy out of the way.
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy

# A one-off build: incremental state would only add to the ~2 GB the build writes
# (see the profile notes in Cargo.toml). Show the disk we have, for a CI log.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
df -h . | tail -n 1 | awk '{print "disk: " $4 " free of " $2}'

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked

# The fuzz targets live outside the workspace (cargo-fuzz builds them with sanitizer
# flags): build them, and give each a short smoke run, so that they cannot rot.
cargo build --manifest-path fuzz/Cargo.toml --bins --locked --target-dir target/fuzz
for t in reference challenge; do
  target/fuzz/debug/$t -runs=20000 >/dev/null 2>&1 || { echo "fuzz target $t failed"; exit 1; }
done
