#!/usr/bin/env bash
# Writes the test environment's lock for a ComfyUI host on purpose: builds a fresh virtual environment
# with every package at its newest release (tests/setup_env.sh with DIFFFERV_UNLOCKED=1), then records
# its exact versions in tests/locks/comfyui-<version>.txt. Run the whole suite in that environment
# before committing the new lock:
#
#   bash tests/lock_env.sh                                   # the vendored ComfyUI 0.3.75
#   DIFFFERV_COMFYUI=/path/to/ComfyUI bash tests/lock_env.sh # any other tree
#   DIFFFERV_VENV=<the venv it printed> [DIFFFERV_COMFYUI=...] bash tests/run.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$(mktemp -d "${TMPDIR:-/tmp}/diffferv-lock.XXXXXX")
DIFFFERV_VENV=$venv DIFFFERV_UNLOCKED=1 bash "$root/tests/setup_env.sh"
host=$("$venv/bin/python" -c 'import sys; sys.path.insert(0, sys.argv[1]); from comfyhost.host import find_comfyui; print(find_comfyui())' "$root")
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$host/comfyui_version.py")
lock=$root/tests/locks/comfyui-$version.txt
{
  echo "# The test environment for ComfyUI $version: every package tests/setup_env.sh installs, at the versions"
  echo "# the suite last passed with. Written by tests/lock_env.sh (see the README's \"Test environment\")."
  "$venv/bin/python" -m pip freeze --disable-pip-version-check --exclude-editable | grep -v '^#'
} > "$lock"
echo "wrote $lock from $venv; run the suite there before committing it:"
echo "  DIFFFERV_VENV=$venv${DIFFFERV_COMFYUI:+ DIFFFERV_COMFYUI=$DIFFFERV_COMFYUI} bash tests/run.sh"
