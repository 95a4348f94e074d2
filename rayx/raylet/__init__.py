"""The raylet: a node's local scheduler, object table and worker pool (one process per node)."""
