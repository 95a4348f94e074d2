"""The runtime every driver and worker process runs, apart from the public API.

The public modules (``rayx.api``, ``rayx.actor``, ``rayx.remote_function``, ...)
check what users pass, build task specs and hand them to this package, which
never imports them (it uses ``rayx.exceptions``, ``rayx.object_ref`` and, to
start a node, ``rayx.node``, which import nothing of it).

  context        this process's runtime state: its core worker, GCS client,
                 namespace, session (the one owner of the process globals)
  driver         how a driver joins a cluster (finds or starts one) and leaves it
  worker         the worker process's main (``python -m rayx.worker_main``)
  core_worker    CoreWorker: submit, put, get, wait, and the raylet's view of
                 this process's refs
  object_cache   the small objects this process holds, and ids known local
  raylet_requests control calls and waits sent to the raylet, and their replies
  functions      the GCS function table as this process uses it
  task_context   which task the calling thread (or asyncio task) runs as
  pushed_calls   the results of work sent straight to other workers of the node
  actor_calls    the caller side of actor calls (direct to the actor's worker,
                 or through the raylet)
  leased_tasks   the caller side of tasks sent to workers the raylet lent us
  transport      the raylet socket: coalesced writes, reads by waiting threads
  links          sockets between two processes of one node (ProcessLink)
  executor       a worker's work loop and how it runs normal tasks
  actor_host     how a worker hosts an actor: concurrency, calls, exit
  task_results   a run's results and errors, and where they are sent
  call_threads   the threads of a threaded actor
  task_events    what each worker ran, for the GCS task_events table
  serialization  values to bytes and back (pickle 5, out-of-band buffers)
"""
