"""The message declarations (rayx/messages.py) and the client-side handler
tables built from them: every tag is declared once, every table a driver,
worker or caller dispatches through passes ``messages.handlers``' signature
check and covers what its senders send, and a handler whose parameters do not
match its message is refused when the table is built."""
import ast
import pathlib

import pytest

import rayx
from rayx import messages
from rayx.runtime import context
from rayx.runtime.actor_calls import ActorChannel
from rayx.runtime.executor import Executor


def _declared():
    return {name: value for name, value in vars(messages).items() if isinstance(value, messages.Message)}


def test_every_message_has_a_unique_tag_and_its_own_name():
    declared = _declared()
    tags = [message.tag for message in declared.values()]
    assert len(tags) == len(set(tags))
    assert {message.tag: message for message in declared.values()} == messages.ALL
    for name, message in declared.items():
        assert message.name == name
        assert len(set(message.fields + message.optional)) == len(message.fields + message.optional)


def test_a_message_is_its_tag_then_its_fields():
    # The wire format: (tag, field, ...), tags as they always were.
    assert messages.PUSH_TASK("spec", {}) == (70, "spec", {})
    assert messages.PUSH_DONE(b"t", []) == (71, b"t", [])
    assert messages.PUSH_GIVE_BACK([b"t"]) == (72, [b"t"])
    assert messages.PUSH_CANCEL(b"t", False) == (73, b"t", False)
    assert messages.SUBMIT("spec") == (2, "spec")


def _inline_messages():
    """(where, message, number of fields given) of every tuple the rayx package builds
    inline with a declaration's tag (``NAME = messages.X.tag``, then ``(NAME, ...)``)."""
    found = []
    for path in pathlib.Path(rayx.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text())
        tags = {}
        for node in tree.body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Name) and isinstance(node.value, ast.Attribute)
                    and node.value.attr == "tag" and isinstance(node.value.value, ast.Attribute)
                    and isinstance(node.value.value.value, ast.Name)
                    and node.value.value.value.id == "messages"):
                tags[node.targets[0].id] = getattr(messages, node.value.value.attr)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Tuple) and node.elts and isinstance(node.elts[0], ast.Name)
                    and node.elts[0].id in tags):
                assert not any(isinstance(e, ast.Starred) for e in node.elts), (path, node.lineno)
                found.append((f"{path.name}:{node.lineno}", tags[node.elts[0].id], len(node.elts) - 1))
    return found


def test_messages_built_inline_on_hot_paths_match_their_declarations():
    found = _inline_messages()
    assert {message.name for _, message, _ in found} >= {"SUBMIT", "PUT", "TASK_DONE", "PUSH_TASK",
                                                           "PUSH_DONE"}
    for where, message, given in found:
        assert len(message.fields) <= given <= len(message.fields) + len(message.optional), \
            f"{where}: {message!r} built with {given} fields"


def _tags(direction_start):
    return {tag for tag, message in messages.ALL.items() if message.direction.startswith(direction_start)}


def test_the_tables_of_drivers_workers_and_callers_pass_the_check(rayx_start):
    core = context.core_worker()
    executor = Executor()
    # A driver handles what the raylet sends every client; a worker also its work.
    driver_table = core.raylet_handlers()
    worker_table = core.raylet_handlers(executor)
    assert set(worker_table) == _tags("raylet ->")
    assert set(driver_table) == _tags("raylet ->") - {messages.EXECUTE.tag, messages.EXIT.tag,
                                                      messages.CANCEL.tag}
    # What callers push to a worker, and what workers answer on the links.
    assert set(executor.link_handlers()) == _tags("caller -> worker")
    channel_table = ActorChannel(core, b"\x01" * 16).link_handlers()
    lease_table = core.leases.link_handlers()
    assert set(channel_table) | set(lease_table) == _tags("worker -> caller")


def test_a_handler_with_the_wrong_signature_is_refused():
    def on_push_done(link, results, task_id):          # fields swapped
        pass

    with pytest.raises(TypeError) as info:
        messages.handlers({messages.PUSH_DONE: on_push_done}, leading=("link",))
    assert "on_push_done" in str(info.value) and "PUSH_DONE" in str(info.value)

    def on_wait(request_id, object_ids, num_ready, with_data, fetch, notify=False):   # no default
        pass

    with pytest.raises(TypeError) as info:
        messages.handlers({messages.WAIT: on_wait})
    assert "on_wait" in str(info.value) and "WAIT" in str(info.value)


def test_every_field_declares_a_kind_and_real_messages_pass_their_check():
    from rayx._core import codec
    spec = codec.TaskSpec(task_id=b"\x01" * 16, job_id=b"\x01\x00\x00\x00", num_returns=2)
    good = [messages.REGISTER("driver", b"", 12, b"\x01\x00\x00\x00", {}),
            messages.SUBMIT(spec), messages.PUT(b"\x02" * 20, None, 10, [b"\x03" * 20]),
            messages.PUT(b"\x02" * 20, b"x", 1, [], True, False),
            messages.WAIT(7, [b"\x02" * 20], 1, True), messages.WAIT(7, [], 0, False, True, False),
            messages.TASK_DONE(b"\x01" * 16, [(b"\x02" * 20, b"v", 1, (), False)], False),
            messages.REFS([b"\x02" * 20], []), messages.REQUEST(3, "status", ()),
            messages.PUSH_TASK(spec, {b"\x02" * 20: None}), messages.PUSH_CANCEL(b"\x01" * 16, True)]
    for message in good:
        messages.check(message)


@pytest.mark.parametrize("message, field", [
    (messages.PUT(b"\x02" * 20, b"data", {"size": 1}, []), "PUT.size"),
    (messages.REFS([b"\x02" * 20, 7], []), "REFS.added"),
    (messages.TASK_DONE([], [], False), "TASK_DONE.task_id"),
    (messages.PUSH_TASK(1, {}), "PUSH_TASK.spec"),
    (messages.WAIT(-1, [], 0, False), "WAIT.request_id"),
    (messages.REFS([b"\x02" * 100], []), "REFS.added"),
])
def test_a_message_of_the_wrong_kinds_is_refused_naming_the_field(message, field):
    with pytest.raises(messages.BadMessage, match=field.replace(".", r"\.")):
        messages.check(message)


def test_limits_on_counts():
    from rayx._core import codec
    huge = codec.TaskSpec(task_id=b"\x01" * 16, job_id=b"\x01\x00\x00\x00", num_returns=10 ** 6)
    with pytest.raises(messages.BadMessage, match="SUBMIT.spec.*10000 returns"):
        messages.check(messages.SUBMIT(huge))
    for bad in [(), (999,), "text", 5, ([1],), messages.PUT(b"\x02" * 20, b"", 1, [], True, True, 1)]:
        with pytest.raises(messages.BadMessage):
            messages.check(bad)
    import rayx
    with pytest.raises(ValueError, match="num_returns must be at most 10000"):
        rayx.remote(num_returns=10 ** 6)(lambda: None)
