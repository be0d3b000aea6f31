"""Read-replica routing: writes to the primary, reads to healthy replicas, read-your-writes."""

from django.core.signals import setting_changed
from django.db.backends.signals import connection_created
from django.db.models.signals import post_migrate, pre_migrate

from data_arch.routing import celery as _celery
from data_arch.routing.health import ReplicaHealth, health_of, reset_health
from data_arch.routing.middleware import ReplicaRoutingMiddleware, dumps_token, loads_token
from data_arch.routing.router import NoHealthyReplica, ReplicaRouter, read_alias, router_sets
from data_arch.routing.router import (
    clear_settings_cache,
    on_connection_created,
    on_post_migrate,
    on_pre_migrate,
)
from data_arch.routing.state import RoutingState, current_state, routing_context, use_primary

__all__ = [
    "NoHealthyReplica",
    "ReplicaHealth",
    "ReplicaRouter",
    "ReplicaRoutingMiddleware",
    "RoutingState",
    "current_state",
    "dumps_token",
    "health_of",
    "loads_token",
    "read_alias",
    "reset_health",
    "router_sets",
    "routing_context",
    "use_primary",
]

connection_created.connect(on_connection_created, dispatch_uid="data_arch.routing.wrappers")
pre_migrate.connect(on_pre_migrate, dispatch_uid="data_arch.routing.pre_migrate")
post_migrate.connect(on_post_migrate, dispatch_uid="data_arch.routing.post_migrate")
setting_changed.connect(clear_settings_cache, dispatch_uid="data_arch.routing.settings")
_celery.connect()
