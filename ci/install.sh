#!/usr/bin/env bash
# The README's install command: builds the Cython/C++ core and installs rayx
# with its test dependencies into the current Python environment.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e ".[test]"
