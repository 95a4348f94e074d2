#!/usr/bin/env bash
# The README's test command: the whole pytest suite (C++ tests included, driven
# from pytest), then a check that the run left no rayx process or arena file behind.
set -euo pipefail
cd "$(dirname "$0")/.."
snapshot=$(mktemp)
python ci/check_leftovers.py snapshot "$snapshot"
python -m pytest -q "$@"
python ci/check_leftovers.py check "$snapshot"
