"""The global scheduler: placement of the tasks local schedulers pass up (head node).

``policy.py`` is the placement rule (pure functions over node records and input
locations); ``service.py`` serves it over gRPC, reading the alive nodes and the
inputs' locations from the GCS (``rayx.gcs.tables``). The local scheduler's
choice to keep a task or pass it up is the raylet's (``rayx.raylet.router``).
"""
