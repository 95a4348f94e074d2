"""Session directories: a bounded number of ended ones is kept, live ones never go,
``session_latest`` points at the newest (rayx._private.sessions)."""
import os
import subprocess
import sys
import textwrap

from conftest import HeadNode
from rayx._private import sessions


def session_dirs(root):
    return sorted(n for n in os.listdir(root) if n.startswith("session_") and n != "session_latest")


def test_ended_sessions_are_pruned_and_live_ones_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYX_KEEP_SESSIONS", "3")
    root = str(tmp_path)
    live_path, live_fd = sessions.create(root)         # the oldest, and live throughout
    try:
        made = []
        for _ in range(7):
            path, fd = sessions.create(root)
            sessions.release(fd)
            made.append(os.path.basename(path))
            names = session_dirs(root)
            assert len(names) <= 3 + 2                  # kept + the live one + the one just made
            assert os.path.basename(live_path) in names
            assert os.readlink(os.path.join(root, "session_latest")) == made[-1]
        sessions.prune(root)
        assert session_dirs(root) == sorted(made[-3:] + [os.path.basename(live_path)])
        assert sessions.is_live(live_path) and not sessions.is_live(os.path.join(root, made[-1]))
    finally:
        sessions.release(live_fd)
    sessions.prune(root)
    assert session_dirs(root) == sorted(made[-3:])     # ended now, and the oldest


def test_a_joined_session_stays_live_while_any_holder_lives(tmp_path):
    path, fd = sessions.create(str(tmp_path))
    joined = sessions.hold(path)
    sessions.release(fd)
    assert sessions.is_live(path)
    sessions.release(joined)
    assert not sessions.is_live(path)


def test_init_cycles_keep_a_bounded_number_and_spare_a_running_cluster(tmp_path):
    head = HeadNode(tmp_path).start()      # the oldest session, live (detached processes)
    try:
        root = tmp_path / "rx"
        head_session = os.path.basename(os.readlink(root / "session_latest"))
        driver = """
            import os
            import rayx
            for _ in range(4):
                ctx = rayx.init(address="local", num_cpus=1, object_store_memory=64 << 20)
                print("SESSION", os.path.basename(ctx.address_info["session_dir"]), flush=True)
                rayx.shutdown()
        """
        out = subprocess.run([sys.executable, "-c", textwrap.dedent(driver)], timeout=300, text=True,
                             capture_output=True, cwd=str(tmp_path),
                             env=dict(head.env, RAYX_KEEP_SESSIONS="2"))
        made = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("SESSION")]
        assert len(made) == 4, out.stderr
        assert session_dirs(root) == sorted(made[-2:] + [head_session])
        assert os.readlink(root / "session_latest") == made[-1]
        status = head.cli("status")               # the running cluster still works
        assert "0/2 CPU" in status.stdout, status.stderr
    finally:
        left = head.stop()
    assert not left, f"processes left after `rayx stop`: {left}"


def test_the_test_run_has_its_own_tmpdir():
    import conftest
    from rayx import node
    assert node.ROOT_DIR == os.environ["RAYX_TMPDIR"] == conftest.RUN_TMPDIR
