"""The GCS (global control store): redis-server shards (server.py), the client of their
key spaces (client.py over connection.py) and what each table holds (tables.py)."""

from .client import BatchWriter, GcsClient, Subscription
from .connection import AuthenticationError, ConnectionLost, RedisConnection, RedisError
from .server import RedisShard, find_redis_server, start_gcs, stop_gcs
from .tables import CLUSTER_TABLES

__all__ = [
    "CLUSTER_TABLES",
    "BatchWriter",
    "GcsClient",
    "Subscription",
    "AuthenticationError",
    "ConnectionLost",
    "RedisConnection",
    "RedisError",
    "RedisShard",
    "find_redis_server",
    "start_gcs",
    "stop_gcs",
]
