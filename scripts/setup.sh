#!/usr/bin/env bash
# Sets minidalle up on a fresh Debian/Ubuntu machine: the Debian packages it uses (git for run metadata;
# g++, make and OpenBLAS for the native kernels, which make training several times faster; a font for the
# prompt labels of image grids), then `npm ci` (which builds the native kernels and compiles the TypeScript).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v git >/dev/null || need+=(git)
command -v g++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
compgen -G '/usr/include/*/cblas.h' >/dev/null || [ -e /usr/include/cblas.h ] || need+=(libopenblas-dev)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
# Remote hosts (ssh and TPU-VM executors) are reached with the system OpenSSH client and rsync.
command -v ssh >/dev/null || need+=(openssh-client)
command -v rsync >/dev/null || need+=(rsync)
# Packages only the test suite needs (MINIDALLE_TEST_PACKAGES=1, set by .ci/run): sshd and iproute2 for the
# network-namespace test hosts, Chromium for the browser tests of the report and the UI, PyTorch and msgpack
# to write real checkpoints for the converter tests.
if [ "${MINIDALLE_TEST_PACKAGES-}" = 1 ]; then
  command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
  command -v ip >/dev/null || need+=(iproute2)
  [ -x /usr/bin/chromium ] || need+=(chromium)
  /usr/bin/python3 -c 'import torch' 2>/dev/null || need+=(python3-torch)
  /usr/bin/python3 -c 'import msgpack' 2>/dev/null || need+=(python3-msgpack)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then sudo=(); elif command -v sudo >/dev/null; then sudo=(sudo); else sudo=(none); fi
  if [ "${sudo[0]-}" = none ] || ! command -v apt-get >/dev/null; then
    echo "setup: cannot install ${need[*]} (no apt-get, or not root and no sudo); continuing without them." >&2
  else
    echo "setup: apt-get install ${need[*]}"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi

npm ci --no-audit --no-fund
