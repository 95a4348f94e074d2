#!/usr/bin/env bash
# The README's test command: the whole pytest suite (C++ tests included, driven
# from pytest), then a check that no rayx process or arena file was left behind.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pytest -q -p no:randomly "$@"
python ci/check_leftovers.py
