#!/usr/bin/env bash
# The test command again, with every dependency at the lowest version its declared
# range allows (ci/lower_bounds.py): a copy of the checkout, without build
# artifacts, installed into a new virtual environment with those pins as pip
# constraints (build requirements included), then ci/test.sh there. The checkout
# itself is left untouched.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -a "$root" "$work/src"
cd "$work/src"
git clean -fdXq
python ci/lower_bounds.py > "$work/lowest.txt"
python -m venv "$work/venv"
export PIP_CONSTRAINT="$work/lowest.txt"
"$work/venv/bin/python" -m pip install -q -e ".[test]"
echo "Installed at the lower bounds:"
"$work/venv/bin/python" -m pip list --format=freeze | grep -iE "$(cut -d= -f1 "$work/lowest.txt" | paste -sd'|')" | sed 's/^/  /'
PATH="$work/venv/bin:$PATH" bash ci/test.sh "$@"
