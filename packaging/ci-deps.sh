#!/usr/bin/env bash
# System tools for the packaging checks, installed with apt-get only when missing (`make test` does
# not need them; the desktop-entry test runs desktop-file-validate too when it is installed):
#   desktop-file-validate (desktop-file-utils)  validates the Linux desktop entry (tests/app/test_desktop_entry.py)
#   Xvfb (xvfb)                                 virtual X server for checking the frozen build's window
# Idempotent and quiet: prints nothing and does nothing when both are present. Usable from make:
#   bash packaging/ci-deps.sh
set -euo pipefail

need=()
command -v desktop-file-validate >/dev/null 2>&1 || need+=(desktop-file-utils)
command -v Xvfb >/dev/null 2>&1 || need+=(xvfb)
[ ${#need[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ci-deps.sh: please install ${need[*]} with your package manager (no apt-get here)" >&2
    exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "ci-deps.sh: need root (or sudo) to install ${need[*]}" >&2; exit 1; }
    sudo=(sudo -n)
fi
# Wait for another apt/dpkg run (e.g. a parallel job) instead of failing on the lock.
apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq -o DPkg::Lock::Timeout=300)
"${apt[@]}" update >/dev/null
"${apt[@]}" install -y --no-install-recommends "${need[@]}" >/dev/null
