"""Process helpers: tying a child's life to its parent's, stopping process trees."""
import ctypes
import os
import signal
import subprocess

_PR_SET_PDEATHSIG = 1


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
