"""The GCS function table as one process uses it: functions and actor classes
are exported (pickled once, stored under the sha1 of their pickle) by the
process that defines them, and loaded (once per process) by the workers that
run them, after the driver's import paths are made visible (its job record
in the ``jobs`` table carries its ``sys.path``).
"""
import hashlib
import sys

from rayx.exceptions import RaySystemError
from rayx.gcs import tables
from rayx.runtime import serialization


class FunctionTable:
    """What this process exported and loaded."""

    def __init__(self, gcs):
        self._gcs = gcs
        self._loaded = {}            # function id -> the function or class
        self._exported = set()
        self._jobs_prepared = set()

    def export(self, blob):
        """Store a pickled function or class in the GCS once; return its id."""
        function_id = hashlib.sha1(blob).digest()
        if function_id not in self._exported:
            tables.FUNCTIONS.put_if_absent(self._gcs, function_id, blob)
            self._exported.add(function_id)
        return function_id

    def load(self, function_id, job_id):
        fn = self._loaded.get(function_id)
        if fn is None:
            self.prepare_job(job_id)
            blob = tables.FUNCTIONS.get(self._gcs, function_id)
            if blob is None:
                raise RaySystemError(f"function {function_id.hex()} is not in the GCS function table")
            fn = self._loaded[function_id] = serialization.loads_function(blob)
        return fn

    def prepare_job(self, job_id):
        """Make the driver's import paths visible here before running its code."""
        if job_id in self._jobs_prepared:
            return
        self._jobs_prepared.add(job_id)
        info = tables.JOBS.get(self._gcs, job_id)
        if not info:
            return
        for path in reversed(info.get("sys_path", [])):
            if path not in sys.path:
                sys.path.insert(1, path)
