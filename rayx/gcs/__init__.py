"""The GCS (global control store): redis-server shards and the client of their tables."""

from .client import CLUSTER_TABLES, BatchWriter, GcsClient, Subscription
from .connection import AuthenticationError, ConnectionLost, RedisConnection, RedisError
from .server import RedisShard, find_redis_server, start_gcs, stop_gcs

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
