#!/bin/sh
# Install what kiln needs on Debian 12, idempotently: only packages that are
# missing are installed, so a second run does nothing and needs no network.
# Run as root (or with sudo available). See README.md for why each is here.
set -eu

PKGS="build-essential cmake pkg-config python3
      wabt clang lld wasi-libc libclang-rt-14-dev-wasm32
      libcjson-dev libssl-dev"

missing=""
for p in $PKGS; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done

if [ -z "$missing" ]; then
  exit 0
fi

echo "kiln: installing missing packages:$missing"
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "kiln: need root to install:$missing" >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
