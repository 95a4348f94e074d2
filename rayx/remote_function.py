"""``@rayx.remote`` on a function: ``f.remote(...)`` builds a TaskSpec and submits it.

The function is pickled (by value, with cloudpickle) once per process and
stored in the GCS function table under the hash of its pickle; each call then
carries only that id and its arguments. Arguments that are ObjectRefs travel
as refs (the raylet resolves them before the task runs); other arguments are
serialized inline, or put into the object store first when they are large.
"""
import functools

from rayx import options as opts
from rayx import protocol
from rayx import serialization
from rayx._core import codec
from rayx.object_ref import ObjectRef


def build_args(core, args, kwargs, function_name):
    """Encode call arguments for a TaskSpec: (arg tuples, ids of refs nested in them)."""
    encoded = []
    nested = []
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
            object_id = core.new_put_id()
            core.store(object_id, sobj, tag=protocol.PUT, cache=False)
            encoded.append((codec.ARG_REF, keyword, object_id))
        else:
            encoded.append((codec.ARG_VALUE, keyword, sobj.to_bytes()))
            if sobj.nested_refs:
                nested.extend(sobj.nested_refs)
    return encoded, nested


class RemoteFunction:
    """A function that runs as a task: call ``.remote(...)``, or ``.options(...).remote(...)``."""

    def __init__(self, function, options):
        self._function = function
        self._options = opts.validate(options, "task")
        self._name = f"{function.__module__}.{function.__qualname__}"
        self._blob = None
        self._function_id = None
        self._exported_to = None
        functools.update_wrapper(self, function)

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Remote functions cannot be called directly. Instead of running "
                        f"'{self._function.__name__}()', try '{self._function.__name__}.remote()'.")

    def remote(self, *args, **kwargs):
        return self._remote(args, kwargs, self._options)

    def options(self, **options):
        merged = dict(self._options)
        merged.update(opts.validate(options, "task"))
        remote_function = self

        class FunctionWithOptions:
            def remote(self, *args, **kwargs):
                return remote_function._remote(args, kwargs, merged)

            def options(self, **more):
                return remote_function.options(**dict(merged, **more))

        return FunctionWithOptions()

    def __getstate__(self):
        # Captured by other remote code: carry the definition, not this process's runtime state.
        state = dict(self.__dict__)
        state.update(_blob=None, _function_id=None, _exported_to=None)
        return state

    def _export(self, core):
        if self._exported_to is not core:
            if self._blob is None:
                try:
                    self._blob = serialization.dumps_function(self._function)
                except Exception as exc:
                    raise TypeError(f"Could not pickle the remote function {self._name}: {exc}") from exc
            self._function_id = core.export_function(self._blob)
            self._exported_to = core
        return self._function_id

    def _remote(self, args, kwargs, options):
        from rayx import api
        core = api._global_worker()
        function_id = self._export(core)
        arg_list, nested = build_args(core, args, kwargs, self._name)
        strategy, node_id, soft = opts.strategy_fields(options.get("scheduling_strategy"))
        num_returns = options.get("num_returns", 1)
        max_retries = options.get("max_retries")
        spec = codec.TaskSpec(
            task_type=codec.NORMAL_TASK,
            task_id=core.next_task_id(),
            job_id=core.current_job_id(),
            parent_task_id=core.current_task_id().binary(),
            caller_id=core.worker_id,
            function_id=function_id,
            function_name=self._name,
            args=arg_list,
            nested_refs=nested,
            num_returns=num_returns,
            resources=opts.resource_request(options, 1),
            max_retries=3 if max_retries is None else max_retries,
            retry_exceptions=bool(options.get("retry_exceptions", False)),
            strategy=strategy,
            strategy_node_id=node_id,
            strategy_soft=soft,
        )
        refs = core.submit_task(spec)
        if num_returns == 1:
            return refs[0]
        if num_returns == 0:
            return None
        return refs
