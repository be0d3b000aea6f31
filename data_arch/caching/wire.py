"""The hit's one Redis command, sent below redis-py's client layer: the only such place.

``redis.Redis.execute_command`` wraps every command in a retry loop and observability hooks
(django-redis configures no retries); on a loopback ``MGET`` that wrapper costs about as much
as parsing the reply. A hit sends its ``MGET`` through the client's own connection pool with
redis-py's public connection API instead -- the same connections, timeouts, health checks and
errors, minus the wrapper. Anything but a plain ``redis.Redis`` (a cluster, a subclass, a
single-connection client) goes through its normal ``mget``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["mget"]

try:
    from redis import Redis as _Redis
except ImportError:  # pragma: no cover
    _Redis = None


def mget(client: Any, keys: list[str]) -> list[Any]:
    if type(client) is not _Redis or client.connection is not None:
        return client.mget(keys)
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        connection.send_command("MGET", *keys)
        return connection.read_response()
    except BaseException:
        connection.disconnect()  # what the client does before giving a connection back
        raise
    finally:
        pool.release(connection)
