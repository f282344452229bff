#!/usr/bin/env bash
# Set up iclkit from scratch: the system packages the tests need (headless Chromium for the HTML report checks),
# a virtual environment (.venv, or $VENV), torch's CPU build, and iclkit with its test extras.
#   bash setup.sh                      # then: . .venv/bin/activate
#   VENV=.ci-venv EDITABLE=0 bash setup.sh
set -euo pipefail
cd "$(dirname "$0")"
VENV="${VENV:-.venv}"
EDITABLE="${EDITABLE:-1}"   # 1: pip install -e (work on iclkit); 0: a normal install (what users get)

if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing chromium (Debian package) for the HTML report tests ..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: chromium is missing and cannot be installed here (needs root and apt-get);" \
         "install it yourself for tests/test_report_browser.py" >&2
  fi
fi

python3 -m venv "$VENV"
. "$VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1
python -m pip install -q torch==2.13.0          # the CPU build; an unpinned torch pulls a multi-GB CUDA build
if [ "$EDITABLE" = 1 ]; then
  python -m pip install -q -e ".[test]"
else
  python -m pip install -q ".[test]"             # non-editable: tasks/ and prompts/ must ship in the wheel
fi
echo "setup: done; activate with: . $VENV/bin/activate"
