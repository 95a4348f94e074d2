"""What the GCS holds: every table, its key, its value and how the value is
encoded, in one place. Every reader and writer goes through these
definitions, never through a table name and a codec call of its own.

``GcsClient`` (client.py) stores opaque bytes under ``table:key``; this module
gives those bytes a meaning. Each ``Table`` encodes on the way in and decodes
on the way out, and takes either a ``GcsClient`` or a ``BatchWriter`` for
writes (the writer batches writes off the critical path). A row that fails to
decode, or decodes to a value of another type, reads as absent (``None``, or
left out of a scan): the GCS is shared with every process of the cluster, and
one bad row must not break a listing.

Where a table lives: the tables marked ``cluster=True`` (nodes, jobs,
named_actors) are small and read as a whole, so they live on the primary
shard (CLUSTER_TABLES, which GcsClient's placement reads); every other table
is spread over the data shards by its key.

Tables (key -> value):

  nodes          node id (16 bytes) -> node record, a dict: node_id, state
                 (NODE_ALIVE | NODE_DEAD), node_ip_address, raylet_socket,
                 grpc_address, is_head, resources_total, resources_available,
                 pending_tasks, running_tasks, infeasible, workers, objects,
                 heartbeat (time.time()), avg_task_seconds, ... (the raylet's
                 heartbeat writes it every HEARTBEAT_INTERVAL)
  jobs           job id (4 bytes) -> job record, a dict: job_id, namespace,
                 driver_pid, start_time, ...
  named_actors   name key (namespace + NUL + name) -> {"actor_id": bytes}
  actors         actor id -> actor record, a dict: actor_id, class_name, state
                 (ACTOR_* below), name, namespace, pid, node_id, restarts, ...
  functions      function id (sha1 of the pickle) -> the cloudpickled function
                 or class (bytes, unpickled only by workers of the cluster)
  tasks          task id -> Lineage: the TaskSpec and the node that recorded
                 it (the submitting node, which answers for the task until it
                 finishes; a reconstruction records itself anew)
  objects        object id -> ObjectLocation of its primary copy (where it was
                 made; kept when that node dies, so readers know it is lost)
  object_copies  object id -> hash {node id: size as decimal bytes}: extra
                 copies pulled to other nodes
  reconstructions  task id + id of the node whose loss it answers -> {"node_id":
                 the node re-executing the task, "time"}: one claim per lost
                 copy, so that many getters cause one re-execution
  task_events    worker id + batch number (8 bytes, big-endian) -> {"common":
                 {...}, "events": [...]}, one row per flush of a worker's
                 events (``rayx.runtime.task_events`` reads the events)

Counters and channels (primary shard): JOB_COUNTER numbers jobs;
ACTOR_STATE_CHANNEL carries actor records as they change; JOB_FINISHED_CHANNEL
the job id of a driver that ended; NODE_DEAD_CHANNEL the id of a node the
monitor (``rayx.monitor``) declared dead.
"""
from rayx._core import codec

NODE_ALIVE = "ALIVE"
NODE_DEAD = "DEAD"

ACTOR_PENDING = "PENDING_CREATION"
ACTOR_ALIVE = "ALIVE"
ACTOR_RESTARTING = "RESTARTING"
ACTOR_DEAD = "DEAD"

JOB_COUNTER = "job"
ACTOR_STATE_CHANNEL = "actor_state"
JOB_FINISHED_CHANNEL = "job_finished"
NODE_DEAD_CHANNEL = "node_dead"

NODE_ID_BYTES = 16
# A node ALIVE in its record but silent for this long is shown DEAD by the
# listings (``rayx status``, ``rayx list nodes``): it stopped without saying so.
HEARTBEAT_TIMEOUT_S = 30.0


class Table:
    """One GCS table: its name, how its values are encoded, and where it lives."""

    __slots__ = ("name", "cluster", "_encode", "_decode")

    def __init__(self, name, encode, decode, cluster=False):
        self.name = name
        self.cluster = cluster        # on the primary shard (see the module's note)
        self._encode = encode
        self._decode = decode

    def encode(self, value):
        return self._encode(value)

    def decode(self, blob):
        """The value of ``blob``, or None if it is not one (see the module's note)."""
        if blob is None:
            return None
        try:
            return self._decode(blob)
        except Exception:
            return None

    def get(self, gcs, key):
        return self.decode(gcs.get(self.name, key))

    def get_many(self, gcs, keys):
        return [self.decode(blob) for blob in gcs.get_many(self.name, keys)]

    def scan(self, gcs):
        """{key: value} of every row that decodes."""
        rows = {}
        for key, blob in gcs.scan(self.name).items():
            value = self.decode(blob)
            if value is not None:
                rows[key] = value
        return rows

    def put(self, gcs_or_writer, key, value):
        gcs_or_writer.put(self.name, key, self._encode(value))

    def put_if_absent(self, gcs, key, value):
        """True if the row was written (no row had the key)."""
        return gcs.put_if_absent(self.name, key, self._encode(value))

    def delete(self, gcs, key):
        gcs.delete(self.name, key)

    def __repr__(self):
        return f"<GCS table {self.name}>"


class ObjectLocation:
    """Where an object's primary copy is: the node that made it, and its size."""

    __slots__ = ("node_id", "size")

    def __init__(self, node_id, size):
        self.node_id = bytes(node_id)
        self.size = size

    def encode(self):
        return self.node_id + str(self.size).encode()

    @classmethod
    def decode(cls, blob):
        raw = bytes(blob)
        if len(raw) < NODE_ID_BYTES:
            raise ValueError("an object location is a node id and a size")
        return cls(raw[:NODE_ID_BYTES], int(raw[NODE_ID_BYTES:] or 0))


class Lineage:
    """A ``tasks`` row: the task's spec and the node that recorded it."""

    __slots__ = ("node_id", "spec")

    def __init__(self, node_id, spec):
        self.node_id = bytes(node_id)
        self.spec = spec

    def encode(self):
        return self.node_id + self.spec.encode()

    @classmethod
    def decode(cls, blob):
        raw = bytes(blob)
        if len(raw) <= NODE_ID_BYTES:
            raise ValueError("a lineage row is a node id and a task spec")
        return cls(raw[:NODE_ID_BYTES], codec.TaskSpec.decode(raw[NODE_ID_BYTES:]))


class CopiesTable:
    """``object_copies``: per object, a hash of the extra nodes holding a copy."""

    __slots__ = ("name", "cluster")

    def __init__(self, name):
        self.name = name
        self.cluster = False

    def add(self, gcs_or_writer, object_id, node_id, size):
        gcs_or_writer.hset(self.name, object_id, node_id, str(size))

    def remove(self, gcs, object_id, node_id):
        gcs.hdel(self.name, object_id, node_id)

    def get(self, gcs, object_id):
        """{node id: size} of the copies of ``object_id``."""
        return _copies(gcs.hgetall(self.name, object_id))

    def scan(self, gcs):
        """{object id: {node id: size}} of every object with a copy."""
        return {object_id: _copies(fields) for object_id, fields in gcs.scan_hashes(self.name).items()}

    def __repr__(self):
        return f"<GCS table {self.name}>"


def _copies(fields):
    return {bytes(node): _int(size) for node, size in fields.items()}


def _int(raw):
    try:
        return int(raw)
    except (TypeError, ValueError):
        return 0


def _record(blob):
    """A codec-encoded dict (a record of the table)."""
    value = codec.loads(blob)
    if type(value) is not dict:
        raise ValueError(f"a table record is a dict, not a {type(value).__name__}")
    return value


def _identity(blob):
    return blob


def _bytes(blob):
    return bytes(blob)


NODES = Table("nodes", codec.dumps, _record, cluster=True)
JOBS = Table("jobs", codec.dumps, _record, cluster=True)
NAMED_ACTORS = Table("named_actors", codec.dumps, _record, cluster=True)
ACTORS = Table("actors", codec.dumps, _record)
FUNCTIONS = Table("functions", _identity, _bytes)
TASKS = Table("tasks", Lineage.encode, Lineage.decode)
OBJECTS = Table("objects", ObjectLocation.encode, ObjectLocation.decode)
OBJECT_COPIES = CopiesTable("object_copies")
RECONSTRUCTIONS = Table("reconstructions", codec.dumps, _record)
TASK_EVENTS = Table("task_events", codec.dumps, _record)

TABLES = (NODES, JOBS, NAMED_ACTORS, ACTORS, FUNCTIONS, TASKS, OBJECTS, OBJECT_COPIES, RECONSTRUCTIONS,
          TASK_EVENTS)
# The names of the tables on the primary shard (GcsClient places rows by it).
CLUSTER_TABLES = frozenset(table.name for table in TABLES if table.cluster)


def named_actor_key(namespace, name):
    """The ``named_actors`` key of an actor name within a namespace."""
    return f"{namespace}\x00{name}".encode()


def is_alive(node):
    """A node record says its node is alive."""
    return node.get("state") == NODE_ALIVE


def is_responsive(node, now):
    """A node record says its node is alive and was written within
    HEARTBEAT_TIMEOUT_S of ``now`` (a time.time())."""
    return is_alive(node) and now - node.get("heartbeat", 0) < HEARTBEAT_TIMEOUT_S


def alive_nodes(gcs):
    """The records of the nodes alive, by node id."""
    return {node_id: node for node_id, node in NODES.scan(gcs).items() if is_alive(node)}


def forget_node_copies(gcs, node_id):
    """Delete the copies ``node_id`` (a dead node) held from ``object_copies``;
    returns how many. Its ``objects`` rows stay: they say where an object was made,
    which is how a reader knows it is lost (and names the node in the error)."""
    node_id = bytes(node_id)
    removed = 0
    for object_id, copies in OBJECT_COPIES.scan(gcs).items():
        if node_id in copies:
            OBJECT_COPIES.remove(gcs, object_id, node_id)
            removed += 1
    return removed


def object_locations(gcs, object_id):
    """{node id: size} of the nodes holding the object: its primary copy and the copies."""
    locations = {}
    primary = OBJECTS.get(gcs, object_id)
    if primary is not None:
        locations[primary.node_id] = primary.size
    locations.update(OBJECT_COPIES.get(gcs, object_id))
    return locations
