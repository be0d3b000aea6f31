"""Read-replica routing: writes to the primary, reads to healthy replicas, read-your-writes.

Importing this package has no side effect; data_arch's app config installs the write watcher,
the read failover and the signal handlers (:mod:`data_arch.wiring`).
"""

from data_arch.routing.health import ReplicaHealth, health_of, reset_health
from data_arch.routing.middleware import ReplicaRoutingMiddleware, dumps_token, loads_token
from data_arch.routing.router import NoHealthyReplica, ReplicaRouter, read_alias
from data_arch.routing.sets import RouterSet, router_sets
from data_arch.routing.state import RoutingState, current_state, routing_context, use_primary
from data_arch.routing.wal import token
from data_arch.routing.writes import is_write

__all__ = [
    "NoHealthyReplica",
    "ReplicaHealth",
    "ReplicaRouter",
    "ReplicaRoutingMiddleware",
    "RouterSet",
    "RoutingState",
    "current_state",
    "dumps_token",
    "health_of",
    "is_write",
    "loads_token",
    "read_alias",
    "reset_health",
    "router_sets",
    "routing_context",
    "token",
    "use_primary",
]
