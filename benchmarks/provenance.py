"""What a results file records about what it measured: the rayx commit (with
"+dirty" when rayx/ has uncommitted changes) and the machine. Shared by the
failure benchmarks that write results/*.json."""
import os
import platform
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "rayx"], cwd=ROOT, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine():
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
