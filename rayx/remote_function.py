"""``@rayx.remote`` on a function: ``f.remote(...)`` builds a TaskSpec and submits it.

The function is pickled (by value, with cloudpickle) once per process and
stored in the GCS function table under the hash of its pickle; each call then
carries only that id and its arguments. Arguments that are ObjectRefs travel
as refs (the raylet resolves them before the task runs); other arguments are
serialized inline, or put into the object store first when they are large.
"""
import functools

from rayx import options as opts
from rayx._core import codec
from rayx.object_ref import ObjectRef
from rayx.remote_definition import RemoteDefinition
from rayx.runtime import serialization
from rayx.runtime.driver import core_worker


def build_args(core, args, kwargs, function_name):
    """Encode call arguments for a TaskSpec: (arg tuples, ids of refs nested in them,
    refs to the large arguments put into the store, or None). The caller keeps those
    refs until the task is submitted (then the task holds its arguments)."""
    encoded = []
    nested = []
    kept = None
    items = [("", value) for value in args] + list(kwargs.items())
    for position, (keyword, value) in enumerate(items):
        if type(value) is ObjectRef:
            encoded.append((codec.ARG_REF, keyword, value.binary()))
            continue
        try:
            sobj = serialization.serialize(value)
        except TypeError as exc:
            which = f"keyword argument {keyword!r}" if keyword else f"argument {position}"
            raise TypeError(f"Could not serialize {which} of {function_name}(): {exc}") from None
        if sobj.size > core.inline_threshold:
            ref = core.put_serialized(sobj)
            kept = [ref] if kept is None else kept + [ref]
            encoded.append((codec.ARG_REF, keyword, ref.binary()))
        else:
            encoded.append((codec.ARG_VALUE, keyword, sobj.to_bytes()))
            if sobj.nested_refs:
                nested.extend(sobj.nested_refs)
    return encoded, nested, kept


class RemoteFunction(RemoteDefinition):
    """A function that runs as a task: call ``.remote(...)``, or ``.options(...).remote(...)``."""

    _kind = "task"

    def __init__(self, function, options):
        # Named as Ray names tasks: the qualified name, without the module (function
        # loading goes by function id, never by name).
        self._init_definition(function, function.__qualname__, options)
        functools.update_wrapper(self, function)

    def __call__(self, *args, **kwargs):
        name = self._definition.__name__
        raise TypeError(f"Remote functions cannot be called directly. Instead of running "
                        f"'{name}()', try '{name}.remote()'.")

    def _remote(self, args, kwargs, options):
        core = core_worker()
        function_id = self._export(core)
        arg_list, nested, kept = build_args(core, args, kwargs, self._name)
        fields = self._spec_fields(options)
        spec = codec.TaskSpec(
            task_type=codec.NORMAL_TASK,
            task_id=core.next_task_id(),
            job_id=core.current_job_id(),
            parent_task_id=core.current_task_id().binary(),
            caller_id=core.worker_id,
            function_id=function_id,
            args=arg_list,
            nested_refs=nested,
            **fields,
        )
        refs = core.submit_task(spec)
        del kept            # refs to large arguments: the submitted task holds them now
        num_returns = fields["num_returns"]
        if num_returns == 1:
            return refs[0]
        if num_returns == 0:
            return None
        return refs

    def _spec_fields(self, options):
        """The TaskSpec fields that follow from ``options`` alone, worked out once per
        options dict (the definition's own, or one ``.options()`` made)."""
        cache = self.__dict__.setdefault("_fields_cache", {})
        entry = cache.get(id(options))
        if entry is not None and entry[0] is options:
            return entry[1]
        strategy, node_id, soft = opts.strategy_fields(options.get("scheduling_strategy"))
        max_retries = options.get("max_retries")
        retry_exceptions, extra = opts.retry_fields(options.get("retry_exceptions", False))
        max_calls = options.get("max_calls")
        if max_calls is None:
            max_calls = 1 if options.get("num_gpus") else 0   # as Ray: GPU tasks free their GPU memory
        if max_calls:
            extra = dict(extra or {}, max_calls=max_calls)
        fields = dict(
            function_name=options.get("name") or self._name,
            num_returns=options.get("num_returns", 1),
            resources=opts.resource_request(options, 1),
            max_retries=3 if max_retries is None else max_retries,
            retry_exceptions=retry_exceptions,
            strategy=strategy,
            strategy_node_id=node_id,
            strategy_soft=soft,
            extra=extra,
        )
        if len(cache) > 64:
            cache.clear()
        cache[id(options)] = (options, fields)
        return fields
