"""The global scheduler: placement of the tasks local schedulers pass up (head node)."""
