"""``@rayx.remote`` on a class: actors, their handles and their methods.

``Cls.remote(...)`` submits the actor's creation task (scheduled like any
task) and returns an ActorHandle at once. ``handle.method.remote(...)``
submits an actor task carrying the caller's id and a per-caller sequence
number; the raylet delivers each caller's calls to the actor in that order.
Handles pickle to (actor id, method table), so they can be passed to tasks
and other actors. Named actors are registered in the GCS ``named_actors``
table (one name per namespace) and their records in the ``actors`` table.
"""
import inspect
import threading

from rayx import options as opts
from rayx._core import codec
from rayx._core.ids import ActorID, JobID, TaskID
from rayx.exceptions import PendingCallsLimitExceeded
from rayx.gcs import tables
from rayx.remote_definition import RemoteDefinition
from rayx.remote_function import build_args
from rayx.runtime import context, serialization
from rayx.runtime.actor_host import ActorExit, is_async_class
from rayx.runtime.driver import core_worker


def method(*args, **kwargs):
    """``@rayx.method(num_returns=2)`` on an actor method sets its default options."""
    def decorator(fn):
        fn.__rayx_method_options__ = opts.validate(kwargs, "method")
        return fn
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return decorator(args[0])
    return decorator


def exit_actor():
    """End the current actor from inside one of its methods (no restart)."""
    if not core_worker().context.actor_id:
        raise TypeError("exit_actor() may only be called inside an actor method")
    raise ActorExit()


def _method_table(cls):
    """{name: {"num_returns": n, ...}} of the public and special methods of an actor class."""
    table = {}
    for name, member in inspect.getmembers(cls, predicate=inspect.isfunction):
        if name.startswith("__") and name not in ("__call__",):
            continue
        options = table[name] = dict(getattr(member, "__rayx_method_options__", {}))
        if isinstance(options.get("retry_exceptions"), (list, tuple)):
            # The table travels in the codec (creation spec, named_actors): classes as a pickle.
            options["retry_exceptions"] = opts.pickled_classes(options["retry_exceptions"])
    return table


def _check_groups(class_name, methods, groups):
    """Every method's concurrency_group must be one the class declares."""
    for name, options in methods.items():
        group = options.get("concurrency_group")
        if group is not None and group not in groups:
            declared = sorted(groups) if groups else "none"
            raise ValueError(f"{class_name}.{name} is in concurrency_group {group!r}, which the actor "
                             f"does not declare (concurrency_groups: {declared})")


class ActorClass(RemoteDefinition):
    """A class made remote: ``.remote(...)`` creates an actor, ``.options(...)`` overrides options."""

    _kind = "actor"

    def __init__(self, cls, options):
        self._init_definition(cls, cls.__qualname__, options)
        self._methods = _method_table(cls)
        self._is_async = is_async_class(cls)
        self.__doc__ = cls.__doc__

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Actors cannot be instantiated directly. Instead of '{self._name}()', "
                        f"use '{self._name}.remote()'.")

    def _remote(self, args, kwargs, options):
        core = core_worker()
        name = options.get("name")
        namespace = options.get("namespace") or context.namespace()
        if name is not None and not name:
            raise ValueError("Actor name must not be empty")
        if name and options.get("get_if_exists"):
            try:
                return named_actor(name, namespace)
            except ValueError:
                pass
        function_id = self._export(core)
        ctx = core.context
        ctx.submit_counter += 1
        actor_id = ActorID.of(JobID(core.current_job_id()), ctx.task_id, ctx.submit_counter)
        task_id = TaskID.for_actor_creation(actor_id)
        arg_list, nested, kept = build_args(core, args, kwargs, self._name + ".__init__")
        strategy, node_id, soft = opts.strategy_fields(options.get("scheduling_strategy"))
        groups = options.get("concurrency_groups") or {}
        _check_groups(self._name, self._methods, groups)
        # As in Ray: an actor needs 1 CPU to be placed and holds 0 while alive,
        # unless it asks for CPUs explicitly (then it holds them for life).
        placement = opts.resource_request(options, 1)
        lifetime = opts.resource_request(options, 0)
        detached = options.get("lifetime") == "detached"
        # 0 means "not given": 1 for a plain actor, 1000 for an async one (as Ray).
        max_concurrency = options.get("max_concurrency") or 0
        extra = {"lifetime_resources": lifetime, "methods": self._methods}
        if groups:
            extra["concurrency_groups"] = groups
        spec = codec.TaskSpec(
            task_type=codec.ACTOR_CREATION_TASK,
            task_id=task_id.binary(),
            job_id=core.current_job_id(),
            parent_task_id=ctx.task_id.binary(),
            caller_id=core.worker_id,
            function_id=function_id,
            function_name=self._name + ".__init__",      # as Ray names the creation task
            args=arg_list,
            nested_refs=nested,
            num_returns=1,
            resources=placement,
            max_retries=0,
            actor_id=actor_id.binary(),
            strategy=strategy,
            strategy_node_id=node_id,
            strategy_soft=soft,
            max_restarts=options.get("max_restarts") or 0,
            max_task_retries=options.get("max_task_retries") or 0,
            max_concurrency=max_concurrency,
            actor_name=name or "",
            namespace=namespace if name else "",
            detached=detached,
            is_asyncio=self._is_async,
            extra=extra,
        )
        max_task_retries = options.get("max_task_retries") or 0
        max_pending_calls = options.get("max_pending_calls") or -1
        if name:
            entry = {"actor_id": actor_id.binary(), "class_name": self._name, "methods": self._methods,
                     "max_task_retries": max_task_retries, "max_pending_calls": max_pending_calls}
            if not tables.NAMED_ACTORS.put_if_absent(core.gcs, tables.named_actor_key(namespace, name),
                                                     entry):
                if options.get("get_if_exists"):
                    return named_actor(name, namespace)
                raise ValueError(f"The name {name!r} (namespace {namespace!r}) is already taken by "
                                 f"another actor; names must be unique within a namespace.")
        core.submit_task(spec)
        del kept            # refs to large arguments: the submitted task holds them now
        return ActorHandle(actor_id.binary(), self._name, self._methods, max_task_retries, max_pending_calls)


def named_actor(name, namespace=None):
    """``rayx.get_actor``: the handle of the live actor named ``name`` in ``namespace``
    (default: the namespace the caller runs in)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"get_actor() expects a non-empty actor name, got {name!r}")
    gcs = core_worker().gcs
    namespace = namespace or context.namespace()
    info = tables.NAMED_ACTORS.get(gcs, tables.named_actor_key(namespace, name))
    if info is not None:
        record = tables.ACTORS.get(gcs, info["actor_id"])
        if record is None or record.get("state") != tables.ACTOR_DEAD:
            return ActorHandle(info["actor_id"], info["class_name"], info["methods"],
                               info["max_task_retries"], info.get("max_pending_calls", -1))
    raise ValueError(f"Failed to look up actor with name '{name}' in namespace '{namespace}'. "
                     f"This could be because 1. You are trying to look up a named actor you didn't "
                     f"create. 2. The named actor died. 3. You did not use a namespace matching the "
                     f"namespace of the actor.")


def handle_by_id(actor_id):
    """A handle of the actor ``actor_id``, from its record in the GCS ``actors`` table."""
    info = tables.ACTORS.get(core_worker().gcs, actor_id)
    if info is None:
        raise ValueError(f"no actor {actor_id.hex()} in the GCS")
    return ActorHandle(actor_id, info["class_name"], info["methods"], info["max_task_retries"])


class ActorHandle:
    """A reference to an actor: call ``handle.method.remote(...)``.

    Its own attributes all start with ``_`` so that none can hide a method of the
    actor (``handle.name`` is the actor's method ``name``); they are the handle's
    fields, read by its ActorMethods and by ``rayx.kill``, as in Ray.
    """

    def __init__(self, actor_id, class_name, methods, max_task_retries=0, max_pending_calls=-1):
        self._actor_id = actor_id
        self._class_name = class_name
        self._methods = methods
        self._max_task_retries = max_task_retries
        self._max_pending_calls = max_pending_calls
        self._method_cache = {}
        if max_pending_calls > 0:
            self._pending = []                  # first return ref of each call not known done
            self._pending_lock = threading.Lock()

    def __getattr__(self, name):
        if name.startswith("_") and name not in ("__ray_terminate__",):
            raise AttributeError(name)
        method = self._method_cache.get(name)
        if method is None:
            if name not in self._methods and name != "__ray_terminate__":
                raise AttributeError(f"'{self._class_name}' actor has no method '{name}'")
            method = self._method_cache[name] = ActorMethod(self, name, self._methods.get(name, {}))
        return method

    def __reduce__(self):
        ctx = serialization.current_context()
        if ctx is not None:
            ctx.actor_handles.append(self._actor_id)
        return (ActorHandle, (self._actor_id, self._class_name, self._methods, self._max_task_retries,
                              self._max_pending_calls))

    def __repr__(self):
        return f"Actor({self._class_name}, {self._actor_id.hex()})"

    def __eq__(self, other):
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self):
        return hash(self._actor_id)

    def _admit_call(self, core):
        """max_pending_calls: raise PendingCallsLimitExceeded when this handle already has
        that many calls whose results are not in. Looks only when the count reaches the limit."""
        limit = self._max_pending_calls
        if len(self._pending) >= limit:
            self._pending = core.still_pending(self._pending)
            if len(self._pending) >= limit:
                raise PendingCallsLimitExceeded(
                    f"The actor {self._class_name} ({self._actor_id.hex()}) has {len(self._pending)} "
                    f"calls pending from this handle, its max_pending_calls; wait for some of "
                    f"their results before calling it again.")

    @property
    def _ray_actor_id(self):
        return ActorID(self._actor_id)

    @property
    def _actor_id_obj(self):
        actor_id = self.__dict__.get("_actor_id_cached")
        if actor_id is None:
            actor_id = self.__dict__["_actor_id_cached"] = ActorID(self._actor_id)
        return actor_id


class ActorMethod:
    def __init__(self, handle, name, options):
        self._handle = handle
        self._name = name
        self._options = options
        # Per-call spec fields that follow from the method and its options alone.
        self._full_name = options.get("name") or f"{handle._class_name}.{name}"
        self._num_returns = options.get("num_returns", 1)
        self._max_retries = options.get("max_task_retries", handle._max_task_retries)
        self._retry_exceptions, extra = opts.retry_fields(options.get("retry_exceptions", False))
        group = options.get("concurrency_group")
        if group is not None:
            extra = dict(extra or {}, concurrency_group=group)
        self._extra = extra

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Actor methods cannot be called directly. Instead of '{self._name}()', "
                        f"try '{self._name}.remote()'.")

    def options(self, **options):
        merged = dict(self._options)
        merged.update(opts.validate(options, "method"))
        return ActorMethod(self._handle, self._name, merged)

    def remote(self, *args, **kwargs):
        if self._handle._max_pending_calls > 0:
            return self._submit_limited(args, kwargs)
        return self._submit(args, kwargs)

    def _submit_limited(self, args, kwargs):
        """A call on a handle with max_pending_calls: refused at the limit, else counted."""
        handle = self._handle
        with handle._pending_lock:
            handle._admit_call(core_worker())
            out = self._submit(args, kwargs)
            first = out if self._num_returns == 1 else (out[0] if out else None)
            if first is not None:
                handle._pending.append(first)
        return out

    def _submit(self, args, kwargs):
        core = core_worker()
        handle = self._handle
        full_name = self._full_name
        if args or kwargs:
            arg_list, nested, kept = build_args(core, args, kwargs, full_name)
        else:
            arg_list, nested, kept = [], [], None
        seq = core.next_actor_sequence(handle._actor_id)
        ctx = core.context
        num_returns = self._num_returns
        spec = codec.TaskSpec(
            task_type=codec.ACTOR_TASK,
            task_id=TaskID.for_actor_task(handle._actor_id_obj, core.worker_id, seq).binary(),
            job_id=ctx.job_id,
            parent_task_id=ctx.task_id.binary(),
            caller_id=core.worker_id,
            function_name=full_name,
            method_name=self._name,
            args=arg_list,
            nested_refs=nested,
            num_returns=num_returns,
            max_retries=self._max_retries,
            retry_exceptions=self._retry_exceptions,
            actor_id=handle._actor_id,
            sequence_number=seq,
            extra=self._extra,
        )
        refs = core.submit_actor_call(spec)
        del kept            # refs to large arguments: the submitted task holds them now
        if num_returns == 1:
            return refs[0]
        if num_returns == 0:
            return None
        return refs
