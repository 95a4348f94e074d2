"""Session directories: a bounded number of ended ones is kept, live ones never go,
``session_latest`` points at the newest (rayx._private.sessions)."""
import os
import subprocess
import sys
import textwrap

import pytest

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


def test_a_root_others_can_write_is_refused(tmp_path):
    root = tmp_path / "shared"
    root.mkdir()
    os.chmod(root, 0o777)
    with pytest.raises(PermissionError, match="writable by other users.*777"):
        sessions.create(str(root))
    assert os.listdir(root) == []
    # init() says the same, before starting anything.
    out = subprocess.run([sys.executable, "-c", "import rayx; rayx.init(num_cpus=1)"],
                         env=dict(os.environ, RAYX_TMPDIR=str(root)), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode != 0 and f"the rayx temp root {root} is writable by other users" in out.stderr
    assert os.listdir(root) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="making a directory another user owns needs root")
def test_a_root_another_user_owns_is_refused(tmp_path):
    root = tmp_path / "theirs"
    root.mkdir(mode=0o755)
    os.chown(root, 65534, 65534)           # nobody
    with pytest.raises(PermissionError, match="belongs to user .*uid 65534"):
        sessions.create(str(root))


def test_a_missing_root_is_made_private(tmp_path):
    root = tmp_path / "new" / "root"
    path, fd = sessions.create(str(root))
    try:
        assert os.stat(root).st_mode & 0o777 == 0o700
    finally:
        sessions.release(fd)
