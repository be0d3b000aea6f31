"""A project using only the router and the cache: no tenant model, no django-tenants, no
Celery, no django-prometheus -- the README's "Add data_arch to your project" setup."""

import os
from urllib.parse import urlsplit


def _database(url: str) -> dict:
    parts = urlsplit(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/"),
        "USER": parts.username or "",
        "PASSWORD": parts.password or "",
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
    }


SECRET_KEY = "minimal"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "data_arch"]
DATABASES = {
    "default": _database(os.environ["DATABASE_URL"]),
    "replica": {**_database(os.environ.get("REPLICA_URL") or os.environ["DATABASE_URL"]),
                "TEST": {"MIRROR": "default"}},
}
DATABASE_ROUTERS = ["data_arch.routers.ReplicaRouter"]
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": os.environ["REDIS_URL"],
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
    },
}
MIDDLEWARE = ["data_arch.routing.middleware.ReplicaRoutingMiddleware"]
DATA_ARCH = {
    "ROUTER": {"PRIMARY": "default", "REPLICAS": ["replica"]},
    "CACHE": {"ALIAS": "default"},
}
USE_TZ = True
