#!/usr/bin/env bash
# The report test opens index.html in a real browser: install Debian's chromium when it is missing.
set -uo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium not installed and apt-get unavailable: the browser test of the report will be skipped" >&2
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
echo "installing Debian's chromium for the report's browser test" >&2
$sudo apt-get install -y -q chromium >/dev/null 2>&1 || {
  $sudo apt-get update -q >/dev/null 2>&1
  $sudo apt-get install -y -q chromium >/dev/null 2>&1 || echo "could not install chromium: the browser test will be skipped" >&2
}
exit 0
