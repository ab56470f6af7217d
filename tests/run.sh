#!/usr/bin/env bash
# The test command: set up the test environment (tests/setup_env.sh), then lint and run the whole suite.
# Extra arguments go to pytest (e.g. `bash tests/run.sh -k video -x`).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${DIFFFERV_VENV:-$root/.venv}
bash "$root/tests/setup_env.sh"
cd "$root"
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
"$venv/bin/python" -m pytest "$@"
