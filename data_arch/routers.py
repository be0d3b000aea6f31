"""``DATABASE_ROUTERS = [..., "data_arch.routers.ReplicaRouter"]``."""

from data_arch.routing.router import ReplicaRouter

__all__ = ["ReplicaRouter"]
