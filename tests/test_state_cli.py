"""The state API (rayx.util.state), task events, rayx.timeline, and the
`rayx list / memory / timeline` commands, on real clusters."""
import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import rayx
from helpers import wait_for
from rayx.util import state

CLI = [sys.executable, "-m", "rayx.scripts.cli"]


def poll(fn, timeout=30.0):
    """fn()'s first truthy result (task events reach the GCS in batches); fails
    when there is none within ``timeout``."""
    result = wait_for(fn, timeout)
    assert result, f"timed out waiting for {fn}"
    return result


def tasks_by_id(**kwargs):
    return {t["task_id"]: t for t in state.list_tasks(**kwargs)}


def finished(task_ids):
    """The tasks once none of ``task_ids`` is PENDING_OR_RUNNING any more."""
    def check():
        tasks = tasks_by_id()
        if all(tid in tasks and tasks[tid]["state"] != state.PENDING_OR_RUNNING for tid in task_ids):
            return tasks
    return poll(check)


def task_id_of(ref):
    return ref.hex()[:32]


@rayx.remote
def square(x):
    return x * x


@rayx.remote
def fail():
    raise ValueError("boom")


@rayx.remote
def big_array():
    return np.ones(200_000)


@rayx.remote
class Counter:
    def __init__(self):
        self.n = 0

    def incr(self):
        self.n += 1
        return self.n

    def bad(self):
        raise KeyError("nope")


@rayx.remote
class AsyncActor:
    async def ping(self, x):
        return x


@rayx.remote
class Quitter:
    def quit(self):
        rayx.actor.exit_actor()


@pytest.mark.parametrize("rayx_fresh", [dict(num_cpus=2)], indirect=True)
def test_task_events_and_list_tasks(rayx_fresh):
    ok = [square.remote(i) for i in range(5)]
    bad = fail.remote()
    counter = Counter.remote()
    calls = [counter.incr.remote() for _ in range(3)]
    bad_call = counter.bad.remote()
    aactor = AsyncActor.remote()
    aping = aactor.ping.remote(7)
    assert rayx.get(ok) == [0, 1, 4, 9, 16]
    assert rayx.get(calls) == [1, 2, 3]
    assert rayx.get(aping) == 7
    for ref in (bad, bad_call):
        with pytest.raises(Exception):
            rayx.get(ref)
    ids = [task_id_of(r) for r in ok + calls + [bad, bad_call, aping]]
    tasks = finished(ids)

    node_id = rayx.get_runtime_context().get_node_id()
    for ref in ok:
        t = tasks[task_id_of(ref)]
        assert t["state"] == "FINISHED" and t["type"] == "NORMAL_TASK"
        assert t["name"].endswith("square")
        assert t["node_id"] == node_id and t["pid"] > 0 and t["pid"] != os.getpid()
        assert t["duration_s"] >= 0 and t["end_time"] >= t["start_time"]
        assert t["error_type"] == "" and t["attempt"] == 0
    t = tasks[task_id_of(bad)]
    assert t["state"] == "FAILED" and t["error_type"] == "ValueError" and t["name"].endswith("fail")
    t = tasks[task_id_of(bad_call)]
    assert t["state"] == "FAILED" and t["error_type"] == "KeyError" and t["type"] == "ACTOR_TASK"
    assert t["name"] == "Counter.bad"
    actor_id = counter._actor_id.hex()
    creation = [x for x in tasks.values() if x["type"] == "ACTOR_CREATION_TASK" and x["name"] == "Counter.__init__"]
    assert len(creation) == 1 and creation[0]["state"] == "FINISHED"
    assert creation[0]["actor_id"] == actor_id == t["actor_id"]
    call_pids = {tasks[task_id_of(r)]["pid"] for r in calls}
    assert call_pids == {creation[0]["pid"]}
    assert tasks[task_id_of(aping)]["name"] == "AsyncActor.ping"
    assert tasks[task_id_of(aping)]["state"] == "FINISHED"

    # filters, limit, detail, get_task, summary
    failed = state.list_tasks(filters=[("state", "=", "FAILED")])
    assert {x["task_id"] for x in failed} == {task_id_of(bad), task_id_of(bad_call)}
    assert all(x["state"] != "FAILED" for x in state.list_tasks(filters=[("state", "!=", "FAILED")]))
    assert len(state.list_tasks(limit=2)) == 2
    pid = tasks[task_id_of(ok[0])]["pid"]
    assert all(x["pid"] == pid for x in state.list_tasks(filters=[("pid", "=", str(pid))]))
    with pytest.raises(ValueError):
        state.list_tasks(filters=[("state", "~", "x")])
    detail = state.get_task(task_id_of(ok[0]))
    assert detail["state"] == "FINISHED" and detail["num_returns"] == 1
    assert detail["worker_id"] and detail["parent_task_id"]
    assert state.get_task("00" * 16) is None
    summary = state.summarize_tasks()
    square_name = tasks[task_id_of(ok[0])]["name"]
    assert summary[square_name]["state_counts"] == {"FINISHED": 5}
    assert summary["Counter.incr"]["state_counts"] == {"FINISHED": 3}

    # the timeline: one complete event per task event
    trace = rayx.timeline()
    by_task = {e["args"]["task_id"]: e for e in trace}
    assert set(ids) <= set(by_task)
    for e in trace:
        assert e["ph"] == "X" and e["dur"] >= 0 and e["ts"] > 0 and e["tid"] > 0 and e["pid"]
    assert by_task[task_id_of(bad)]["args"]["state"] == "FAILED"
    assert by_task[task_id_of(calls[0])]["cat"] == "actor_task"


def test_timeline_file_and_pending_tasks(rayx_fresh, tmp_path):
    flag = tmp_path / "go"

    @rayx.remote
    def wait_for_flag(path):
        while not os.path.exists(path):
            time.sleep(0.01)
        return "done"

    @rayx.remote
    def after(x):
        return x

    blocked = wait_for_flag.remote(str(flag))
    dependent = after.remote(blocked)     # waits for its input: lineage, no event

    def both_pending():
        tasks = tasks_by_id()
        got = [tasks.get(task_id_of(r)) for r in (blocked, dependent)]
        return all(t is not None and t["state"] == state.PENDING_OR_RUNNING for t in got) and got
    pending = poll(both_pending)
    assert pending[0]["node_id"] is None and pending[0]["duration_s"] is None
    assert pending[1]["name"].endswith("after")
    flag.write_text("")
    assert rayx.get(dependent) == "done"
    finished([task_id_of(blocked), task_id_of(dependent)])

    out = tmp_path / "trace.json"
    assert rayx.timeline(filename=str(out)) is None
    trace = json.loads(out.read_text())
    names = {e["name"] for e in trace}
    assert any(n.endswith("wait_for_flag") for n in names) and any(n.endswith("after") for n in names)
    first = {e["args"]["task_id"]: e for e in trace}
    assert first[task_id_of(dependent)]["ts"] >= first[task_id_of(blocked)]["ts"]


def test_actor_exit_records_its_last_call(rayx_fresh):
    quitter = Quitter.remote()
    ref = quitter.quit.remote()
    with pytest.raises(Exception):
        rayx.get(ref)
    # The worker flushes its events before it exits.
    task = poll(lambda: (t := state.get_task(task_id_of(ref))) and t["state"] != state.PENDING_OR_RUNNING
                and t)
    assert task["state"] == "FAILED" and task["error_type"] == "ActorExit"
    actors = poll(lambda: [a for a in state.list_actors(filters=[("class_name", "=", "Quitter")])
                           if a["state"] == "DEAD"])
    assert len(actors) == 1
    assert state.summarize_actors()["Quitter"] == {"DEAD": 1}


def test_list_nodes_and_objects(rayx_fresh):
    nodes = state.list_nodes()
    assert len(nodes) == 1
    node = nodes[0]
    node_id = rayx.get_runtime_context().get_node_id()
    assert node["node_id"] == node_id and node["state"] == "ALIVE" and node["is_head"]
    assert node["resources_total"]["CPU"] == 2 and node["node_ip_address"]
    assert state.list_nodes(filters=[("is_head", "=", "false")]) == []
    assert state.list_nodes(filters=[("state", "=", "ALIVE")]) == nodes

    put_ref = rayx.put(b"x" * 10_000)
    array_ref = big_array.remote()
    small_ref = square.remote(3)
    assert rayx.get(small_ref) == 9
    rayx.get(array_ref)

    def recorded():
        objects = {o["object_id"]: o for o in state.list_objects()}
        if all(r.hex() in objects for r in (put_ref, array_ref, small_ref)):
            return objects
    objects = poll(recorded)
    put_obj, array_obj, small_obj = (objects[r.hex()] for r in (put_ref, array_ref, small_ref))
    assert put_obj["is_put"] and put_obj["creator"] == "(put)" and put_obj["size"] >= 10_000
    assert not array_obj["is_put"] and array_obj["creator"].endswith("big_array")
    assert array_obj["size"] >= 200_000 * 8 and array_obj["task_id"] == task_id_of(array_ref)
    assert small_obj["creator"].endswith("square")
    for obj in (put_obj, array_obj, small_obj):
        assert obj["node_id"] == node_id and obj["copies"] == []
    assert [o["object_id"] for o in state.list_objects(filters=[("is_put", "=", "true")],
                                                       limit=100)] == [put_ref.hex()]
    summary = state.summarize_objects()
    assert summary["total_objects"] == len(objects)
    assert summary["per_node"][node_id]["bytes"] == summary["total_bytes"] >= 1_610_000


def test_rows_allow_attribute_access(rayx_fresh):
    """Ray's state rows are read as ``t.state`` as well as ``t["state"]``."""
    ref = square.remote(4)
    counter = Counter.remote()
    assert rayx.get([ref, counter.incr.remote()]) == [16, 1]
    finished([task_id_of(ref)])
    [task] = state.list_tasks(filters=[("task_id", "=", task_id_of(ref))])
    assert task.state == task["state"] == "FINISHED" and task.name.endswith("square")
    assert state.get_task(task.task_id).pid == task.pid
    actor = poll(lambda: state.list_actors(filters=[("class_name", "=", "Counter"), ("state", "=", "ALIVE")]))[0]
    assert actor.actor_id == counter._actor_id.hex() == state.get_actor(actor.actor_id).actor_id
    [node] = state.list_nodes()
    assert node.is_head and node.resources_total["CPU"] == 2
    obj = poll(lambda: state.list_objects(filters=[("object_id", "=", ref.hex())]))[0]
    assert obj.creator.endswith("square") and obj.size == obj["size"]
    assert json.loads(json.dumps(task)) == dict(task)
    with pytest.raises(AttributeError, match="no field 'no_such_field'"):
        task.no_such_field


def test_python_m_rayx_and_version():
    from importlib.metadata import version
    out = subprocess.run([sys.executable, "-m", "rayx", "--version"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"rayx, version {rayx.__version__}" == f"rayx, version {version('rayx')}"
    out = subprocess.run([sys.executable, "-m", "rayx", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "Usage: rayx" in out.stdout and "start" in out.stdout, out.stderr


def _start_cluster(env):
    subprocess.run(CLI + ["start", "--head", "--port", "0", "--num-cpus", "2",
                          "--object-store-memory", str(128 << 20)],
                   check=True, env=env, timeout=60, capture_output=True)


def _cli(env, *args, check=True):
    out = subprocess.run(CLI + list(args), env=env, timeout=60, capture_output=True, text=True)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def test_cli_list_memory_timeline(tmp_path):
    env = dict(os.environ, RAYX_TMPDIR=str(tmp_path / "rx"))
    out = _cli(env, "list", "tasks", check=False)
    assert out.returncode != 0 and "no rayx cluster" in out.stderr
    try:
        _start_cluster(env)
        driver = textwrap.dedent("""
            import numpy as np
            import rayx
            rayx.init(address="auto")

            @rayx.remote
            def square(x):
                return x * x

            @rayx.remote
            def fail():
                raise ValueError("boom")

            @rayx.remote
            class Keeper:
                def hold(self):
                    return rayx.put(np.zeros(100_000))

            keeper = Keeper.options(name="keeper", lifetime="detached").remote()
            print("RESULT", sum(rayx.get([square.remote(i) for i in range(10)])))
            try:
                rayx.get(fail.remote())
            except Exception:
                pass
            rayx.get(keeper.hold.remote())
            rayx.shutdown()
        """)
        done = subprocess.run([sys.executable, "-c", driver], env=env, timeout=120,
                              capture_output=True, text=True)
        assert "RESULT 285" in done.stdout, done.stderr

        def all_done():
            rows = json.loads(_cli(env, "list", "tasks", "--format", "json").stdout)
            return len(rows) >= 13 and all(r["state"] != "PENDING_OR_RUNNING" for r in rows) and rows
        rows = poll(all_done)
        names = [r["name"] for r in rows]
        assert names.count("square") == 10         # named as Ray names them, no module
        by_name = json.loads(_cli(env, "list", "tasks", "--filter", "name=square", "--format", "json").stdout)
        assert len(by_name) == 10
        assert {r["state"] for r in rows} == {"FINISHED", "FAILED"}

        table = _cli(env, "list", "tasks").stdout
        assert table.splitlines()[0].split()[:3] == ["TASK_ID", "NAME", "STATE"]
        assert "FAILED" in table and "ValueError" in table and "Keeper.hold" in table

        failed = json.loads(_cli(env, "list", "tasks", "--filter", "state=FAILED", "--format", "json").stdout)
        assert len(failed) == 1 and failed[0]["name"].endswith("fail")
        limited = _cli(env, "list", "tasks", "--limit", "2", "--format", "json")
        assert len(json.loads(limited.stdout)) == 2 and "--limit" in limited.stderr
        others = json.loads(_cli(env, "list", "tasks", "--filter", "state!=FINISHED",
                                 "--filter", "type=NORMAL_TASK", "--format", "json").stdout)
        assert [r["task_id"] for r in others] == [failed[0]["task_id"]]

        nodes = json.loads(_cli(env, "list", "nodes", "--format", "json").stdout)
        assert len(nodes) == 1 and nodes[0]["state"] == "ALIVE" and nodes[0]["resources_total"]["CPU"] == 2
        assert "ALIVE" in _cli(env, "list", "nodes").stdout

        actors = json.loads(_cli(env, "list", "actors", "--format", "json").stdout)
        assert [(a["class_name"], a["name"], a["state"]) for a in actors] == [("Keeper", "keeper", "ALIVE")]
        assert "keeper" in _cli(env, "list", "actors", "--filter", "name=keeper").stdout

        objects = json.loads(_cli(env, "list", "objects", "--format", "json").stdout)
        puts = [o for o in objects if o["is_put"]]
        assert len(puts) == 1 and puts[0]["size"] >= 800_000 and puts[0]["creator"] == "(put)"
        assert sum(o["creator"].endswith("square") for o in objects) == 10

        memory = _cli(env, "memory").stdout
        assert "(put)" in memory and "Keeper.hold" in memory
        assert f"{len(objects)} objects" in memory
        assert nodes[0]["node_id"] in memory.split("--- Summary ---")[1]
        mem_json = json.loads(_cli(env, "memory", "--format", "json", "--sort-by", "size").stdout)
        assert mem_json["objects"][0]["object_id"] == puts[0]["object_id"]
        assert mem_json["summary"]["total_objects"] == len(objects)

        trace_path = tmp_path / "trace.json"
        out = _cli(env, "timeline", "--output", str(trace_path))
        assert str(trace_path) in out.stdout
        trace = json.loads(trace_path.read_text())
        assert len(trace) == len(rows)
        assert all(e["ph"] == "X" and isinstance(e["tid"], int) for e in trace)
        assert json.loads(_cli(env, "timeline", "--output", "-").stdout) == trace

        bad = _cli(env, "list", "tasks", "--filter", "nonsense", check=False)
        assert bad.returncode != 0 and "KEY=VALUE" in bad.stderr
        bad = _cli(env, "list", "jobs", check=False)
        assert bad.returncode != 0
    finally:
        subprocess.run(CLI + ["stop"], env=env, timeout=60)
