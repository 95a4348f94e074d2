"""Print a pip constraints file that pins every dependency rayx declares
(runtime, test extra and build requirements) to the lowest version its range
allows, so CI can check that the lower bounds really work:

    python ci/lower_bounds.py > lowest.txt
    PIP_CONSTRAINT=lowest.txt pip install -e ".[test]"

Every requirement must have a ">=" lower bound; one without makes this script fail.
"""
import os
import re
import sys

try:
    import tomllib
except ImportError:       # Python < 3.11
    import tomli as tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*)$")


def requirements(pyproject):
    project = pyproject["project"]
    yield from project["dependencies"]
    for extra in project.get("optional-dependencies", {}).values():
        yield from extra
    yield from pyproject["build-system"]["requires"]


def lower_bound(requirement):
    """(name, "name==lowest[; marker]") of one requirement string."""
    versions, _, marker = requirement.partition(";")
    name, _, spec = _REQUIREMENT.match(versions).groups()
    for clause in spec.split(","):
        clause = clause.strip()
        if clause.startswith(">="):
            pin = f"{name}=={clause[2:].strip()}"
            return name, pin + (f"; {marker.strip()}" if marker.strip() else "")
    raise SystemExit(f"{requirement!r} in pyproject.toml has no '>=' lower bound")


def main():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        pyproject = tomllib.load(f)
    pins = dict(lower_bound(r) for r in requirements(pyproject))
    for name in sorted(pins, key=str.lower):
        print(pins[name])
    return 0


if __name__ == "__main__":
    sys.exit(main())
