# The task spec and the message codec, for Cython modules that cimport them to
# read TaskSpec fields or call dumps/loads at C speed (none does yet: the
# raylet and the runtime are Python and use the module's Python interface).

cdef class TaskSpec:
    cdef public int task_type                  # NORMAL_TASK / ACTOR_CREATION_TASK / ACTOR_TASK
    cdef public bytes task_id                  # 16
    cdef public bytes job_id                   # 4
    cdef public bytes parent_task_id           # 16 or b""
    cdef public bytes caller_id                # 16 or b""
    cdef public bytes function_id              # usually 20 (sha1)
    cdef public str function_name              # "module.f" or "Counter.inc"
    cdef public str method_name                # "" unless an actor task
    cdef public list args                      # [(kind, keyword, data)]
    cdef public list nested_refs               # [object id bytes] inside inline args
    cdef public long long num_returns
    cdef public dict resources                 # {name: amount}
    cdef public long long max_retries          # -1 = infinite
    cdef public bint retry_exceptions
    cdef public long long attempt
    cdef public bytes actor_id                 # 16 or b""
    cdef public long long sequence_number
    cdef public int strategy                   # STRATEGY_DEFAULT / _SPREAD / _NODE_AFFINITY
    cdef public bytes strategy_node_id
    cdef public bint strategy_soft
    cdef public long long max_restarts         # actor creation options ...
    cdef public long long max_task_retries
    cdef public long long max_concurrency
    cdef public str actor_name
    cdef public str namespace
    cdef public bint detached
    cdef public bint is_asyncio
    cdef public dict extra                     # forward compatibility, encodable values

    cpdef bytes encode(self)
    cpdef list return_ids(self)
    cpdef list arg_refs(self)
    cpdef tuple shape_key(self)
    cpdef str actor_class_name(self)
    cpdef bint retries_left(self)
    cpdef bint take_retry(self)
    cdef tuple _astuple(self)

cpdef bytes dumps(object obj)
cpdef object loads(object data)
