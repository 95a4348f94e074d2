"""Process helpers: starting rayx's own Python children, tying a child's life to its
parent's, stopping process trees."""
import ctypes
import os
import signal
import subprocess
import sys

_PR_SET_PDEATHSIG = 1

# The directory holding the ``rayx`` package this process runs.
RAYX_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# ``python -m`` and ``python -c`` put the working directory first on sys.path, so
# a child started from a directory holding another rayx tree (an unbuilt checkout)
# would import that one. The child imports rayx from RAYX_ROOT first, then takes
# RAYX_ROOT off sys.path again: the rest of its path is what it would be anyway.
_LAUNCH = ("import sys; sys.path.insert(0, {root!r}); import rayx; sys.path.remove({root!r}); "
           "from {module} import main; main()")


def python_command(module):
    """argv running ``module.main()`` in a new interpreter with this process's rayx
    (raylets, workers), whatever its working directory holds."""
    return [sys.executable, "-c", _LAUNCH.format(root=RAYX_ROOT, module=module)]


def die_with_parent(sig=signal.SIGKILL):
    """Ask Linux to send ``sig`` to this process when its parent exits.

    If the parent is already gone (we were re-parented to init before the
    call took effect), exit at once.
    """
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent or parent == 1:
        os._exit(1)


def stop_process(proc, timeout=5.0):
    """SIGTERM, wait, then SIGKILL a subprocess.Popen; always reaps it."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
    except OSError:
        pass


def kill_pid(pid, timeout=5.0):
    """Stop a process we did not start (e.g. recorded by ``rayx start``): TERM, then KILL."""
    import psutil
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    try:
        proc.terminate()
        proc.wait(timeout=timeout)
    except psutil.TimeoutExpired:
        proc.kill()
        try:
            proc.wait(timeout=timeout)
        except psutil.TimeoutExpired:
            pass
    except psutil.NoSuchProcess:
        pass
