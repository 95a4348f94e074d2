"""Validation of ``@rayx.remote(...)`` and ``.options(...)`` arguments, and how they
land in a TaskSpec.

Every option is checked when it is given, with an error that names it, so a
typo fails at decoration time rather than as a task that never runs. An
option rayx cannot honour yet (``runtime_env``, ``label_selector``) is an
error when it asks for anything, never silently dropped.
"""
import cloudpickle

from rayx._core import codec
from rayx.messages import MAX_NUM_RETURNS

_TASK_OPTIONS = {
    "num_cpus", "num_gpus", "resources", "memory", "num_returns", "max_retries",
    "retry_exceptions", "scheduling_strategy", "name", "runtime_env", "max_calls",
    "accelerator_type", "label_selector", "_metadata",
}
_ACTOR_OPTIONS = {
    "num_cpus", "num_gpus", "resources", "memory", "max_restarts", "max_task_retries",
    "max_concurrency", "name", "namespace", "lifetime", "get_if_exists", "scheduling_strategy",
    "runtime_env", "accelerator_type", "concurrency_groups", "max_pending_calls", "label_selector",
    "_metadata",
}
_METHOD_OPTIONS = {"num_returns", "max_task_retries", "retry_exceptions", "concurrency_group", "name"}


def validate(options, kind):
    allowed = {"task": _TASK_OPTIONS, "actor": _ACTOR_OPTIONS, "method": _METHOD_OPTIONS}[kind]
    for key, value in options.items():
        if key not in allowed:
            raise ValueError(f"Invalid option {key!r} for a remote {'function' if kind == 'task' else kind}; "
                             f"valid options are {sorted(k for k in allowed if not k.startswith('_'))}")
        _check_value(key, value)
    return dict(options)


def validate_override(options, kind):
    """``.options(...)`` arguments: as ``validate``, and max_calls stays the decorator's (as Ray)."""
    if kind == "task" and "max_calls" in options:
        raise ValueError("max_calls cannot be overridden with .options(); set it in "
                         "@rayx.remote(max_calls=...)")
    return validate(options, kind)


def check_runtime_env(runtime_env, where):
    """None or {} only: rayx cannot set up runtime environments yet, and must not pretend to."""
    if runtime_env is None:
        return
    if not isinstance(runtime_env, dict):
        raise TypeError(f"runtime_env must be a dict, got {type(runtime_env).__name__} (in {where})")
    if runtime_env:
        raise NotImplementedError(
            f"runtime_env is not supported by rayx yet (in {where}, keys given: {sorted(runtime_env)}); "
            f"install what the tasks need in the cluster's Python environment and set environment "
            f"variables before `rayx start`, or leave runtime_env out.")


def _check_value(key, value):
    if value is None:
        return
    if key in ("num_cpus", "num_gpus", "memory"):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{key} must be a non-negative number, got {value!r}")
        if key == "num_gpus" and value > 1 and value != int(value):
            raise ValueError(f"num_gpus above 1 must be a whole number, got {value!r}")
    elif key == "resources":
        if not isinstance(value, dict):
            raise TypeError(f"resources must be a dict of name -> amount, got {type(value).__name__}")
        for name, amount in value.items():
            if name in ("CPU", "GPU"):
                raise ValueError(f"Use the num_cpus / num_gpus options instead of resources={{{name!r}: ...}}")
            if not isinstance(amount, (int, float)) or isinstance(amount, bool) or amount < 0:
                raise ValueError(f"resource {name!r} must be a non-negative number, got {amount!r}")
    elif key == "num_returns":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"num_returns must be a non-negative int, got {value!r}")
        if value > MAX_NUM_RETURNS:
            raise ValueError(f"num_returns must be at most {MAX_NUM_RETURNS}, got {value!r}")
    elif key in ("max_retries", "max_restarts", "max_task_retries"):
        if not isinstance(value, int) or isinstance(value, bool) or value < -1:
            raise ValueError(f"{key} must be an int >= -1 (-1 means forever), got {value!r}")
    elif key == "max_concurrency":
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"max_concurrency must be an int >= 1, got {value!r}")
    elif key == "retry_exceptions":
        if isinstance(value, (list, tuple)):
            if not value or not all(isinstance(c, type) and issubclass(c, BaseException) for c in value):
                raise TypeError(f"retry_exceptions must be a bool or a non-empty list of exception "
                                f"classes, got {value!r}")
        elif not isinstance(value, bool):
            raise TypeError(f"retry_exceptions must be a bool or a list of exception classes, got {value!r}")
    elif key == "runtime_env":
        check_runtime_env(value, "the remote options")
    elif key == "label_selector":
        if value:
            raise NotImplementedError(f"label_selector is not supported by rayx yet (nodes have no "
                                      f"labels), got {value!r}; use resources or a "
                                      f"NodeAffinitySchedulingStrategy instead")
    elif key == "max_calls":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"max_calls must be an int >= 0 (0 means no limit), got {value!r}")
    elif key == "max_pending_calls":
        if not isinstance(value, int) or isinstance(value, bool) or value == 0 or value < -1:
            raise ValueError(f"max_pending_calls must be -1 (no limit) or an int >= 1, got {value!r}")
    elif key == "concurrency_groups":
        if not isinstance(value, dict) or not all(
                isinstance(name, str) and name and isinstance(size, int) and not isinstance(size, bool)
                and size >= 1 for name, size in value.items()):
            raise ValueError(f"concurrency_groups must be a dict of group name -> number of "
                             f"concurrent calls (an int >= 1), got {value!r}")
    elif key in ("concurrency_group", "accelerator_type"):
        if not isinstance(value, str) or not value:
            raise TypeError(f"{key} must be a non-empty str, got {value!r}")
    elif key == "_metadata":
        if not isinstance(value, dict):
            raise TypeError(f"_metadata must be a dict, got {type(value).__name__}")
    elif key == "lifetime":
        if value not in ("detached", "non_detached"):
            raise ValueError(f"lifetime must be 'detached' or 'non_detached', got {value!r}")
    elif key == "scheduling_strategy":
        # Imported here: the package rayx.util imports the public API, which imports this.
        from rayx.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        if value not in ("DEFAULT", "SPREAD") and not isinstance(value, NodeAffinitySchedulingStrategy):
            raise ValueError(f"scheduling_strategy must be 'DEFAULT', 'SPREAD' or a "
                             f"NodeAffinitySchedulingStrategy, got {value!r}")
    elif key in ("name", "namespace"):
        if not isinstance(value, str):
            raise TypeError(f"{key} must be a str, got {type(value).__name__}")


def resource_request(options, default_cpus):
    """{"CPU": ..., "GPU": ..., custom...} for a TaskSpec, zero amounts dropped."""
    cpus = options.get("num_cpus")
    request = {"CPU": float(default_cpus if cpus is None else cpus)}
    gpus = options.get("num_gpus")
    if gpus:
        request["GPU"] = float(gpus)
    memory = options.get("memory")
    if memory:
        request["memory"] = float(memory)
    for name, amount in (options.get("resources") or {}).items():
        request[name] = float(amount)
    accelerator = options.get("accelerator_type")
    if accelerator:
        # As Ray: a sliver of the resource a node of that accelerator type declares.
        request[f"accelerator_type:{accelerator}"] = 0.001
    return {name: amount for name, amount in request.items() if amount}


def strategy_fields(strategy):
    """(strategy code, node id bytes, soft) for a TaskSpec."""
    if strategy is None or strategy == "DEFAULT":
        return codec.STRATEGY_DEFAULT, b"", False
    if strategy == "SPREAD":
        return codec.STRATEGY_SPREAD, b"", False
    node_id = strategy.node_id
    node_id = bytes.fromhex(node_id) if isinstance(node_id, str) else bytes(node_id)
    return codec.STRATEGY_NODE_AFFINITY, node_id, bool(strategy.soft)


def retry_fields(value):
    """(retry_exceptions flag, spec extra) for a ``retry_exceptions`` option: a list of
    classes travels pickled in the spec's extra, and only those (and subclasses) retry."""
    if isinstance(value, (list, tuple)):
        value = pickled_classes(value)
    if isinstance(value, bytes):           # already pickled (an actor's method table)
        return True, {"retry_exceptions": value}
    return bool(value), None


def pickled_classes(classes):
    return cloudpickle.dumps(tuple(classes))
