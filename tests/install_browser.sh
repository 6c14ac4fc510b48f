#!/usr/bin/env bash
# Debian's Chromium and its WebDriver, for the browser tests of « Mon DMP » (tests/browser.py),
# installed when missing. The README's test command runs this first, so CI installs them itself.
# Without root (and no password-less sudo) it only warns: the browser tests then skip, except in
# CI (CI=true), where they must run and this fails instead.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo="sudo -n"
    else
        echo "install_browser.sh: chromium and chromium-driver are missing; as root: apt-get install -y chromium chromium-driver" >&2
        [ -z "${CI:-}" ] && exit 0
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq chromium chromium-driver >/dev/null
