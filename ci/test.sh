#!/usr/bin/env bash
# The README's test command: the whole pytest suite (C++ tests included, driven
# from pytest), then a check that the run left no rayx process or arena file
# behind. The check always runs and reports, whatever pytest's outcome; the
# script fails if either failed.
set -uo pipefail
cd "$(dirname "$0")/.."
snapshot=$(mktemp)
trap 'rm -f "$snapshot"' EXIT
python ci/check_leftovers.py snapshot "$snapshot" || exit 1
python -m pytest -q "$@"
tests_status=$?
python ci/check_leftovers.py check "$snapshot"
leftover_status=$?
if [ "$tests_status" -ne 0 ]; then
    echo "pytest failed (exit status $tests_status)"
    exit "$tests_status"
fi
exit "$leftover_status"
