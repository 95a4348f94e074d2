"""Which task the calling code runs as. The ids of the tasks and objects it
creates derive from it (a child task's id from its parent's and a counter, a
put's object id from its task's and another), so a re-executed task makes the
same ids again.

Kept in a context variable, so every thread and every asyncio task of an actor
has its own (a driver's threads share the driver's).
"""
import contextvars


class TaskContext:
    """What the current task is, and how many tasks and puts it made so far."""

    __slots__ = ("task_id", "task_name", "job_id", "actor_id", "submit_counter", "put_counter")

    def __init__(self, task_id=None, task_name=None, job_id=None, actor_id=b""):
        self.task_id = task_id
        self.task_name = task_name
        self.job_id = job_id
        self.actor_id = actor_id
        self.submit_counter = 0
        self.put_counter = 0


_current = contextvars.ContextVar("rayx_task_context", default=None)

current = _current.get        # the TaskContext the caller runs in, or None (the process's default)


def enter_task(task_id, task_name, job_id, actor_id=b""):
    """Make this thread (or asyncio task) run as the given task."""
    _current.set(TaskContext(task_id, task_name, job_id, actor_id))


def leave_task():
    _current.set(None)
