"""Settings of the demo SaaS. Services come from DATABASE_URL, REPLICA_URL and REDIS_URL.

When those are not in the environment they are read from ``.services.env`` at the project root,
which the demo command writes for the services it started, so ``manage.py`` in another terminal
reaches the same servers.
"""

import os
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def _service_env() -> dict[str, str]:
    values: dict[str, str] = {}
    path = BASE_DIR / ".services.env"
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.removeprefix("export ").partition("=")
            if sep:
                values[key.strip()] = value.strip()
    values.update({k: v for k, v in os.environ.items() if k.endswith("_URL") and v})
    return values


_ENV = _service_env()
DATABASE_URL = _ENV.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/data_arch")
REPLICA_URL = _ENV.get("REPLICA_URL", DATABASE_URL)
REDIS_URL = _ENV.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_db(url: str, db: int) -> str:
    """``url`` with its database number replaced by ``db``."""
    return urlsplit(url)._replace(path=f"/{db}").geturl()


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "demo-only-not-secret-change-me")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,.localhost,127.0.0.1").split(",")

SHARED_APPS = [
    "django_tenants",
    "example_project.customers",
    "example_project.billing",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.admin",
    "django_prometheus",
    "django_celery_beat",  # beat's DatabaseScheduler: the admin lists data_arch's entries
    "data_arch",
    "example_project.audit",
]
TENANT_APPS = [
    "django.contrib.contenttypes",
    "example_project.shop",
    "example_project.events",
]
INSTALLED_APPS = SHARED_APPS + [app for app in TENANT_APPS if app not in SHARED_APPS]

TENANT_MODEL = "customers.Client"
TENANT_DOMAIN_MODEL = "customers.Domain"
PUBLIC_SCHEMA_URLCONF = "example_project.urls_public"
ROOT_URLCONF = "example_project.urls_tenants"
SHOW_PUBLIC_IF_NO_TENANT_FOUND = True
# data_arch sets search_path with every statement (for its own transaction), so django-tenants'
# own `SET search_path` before every query is a round trip that changes nothing: send it only
# when the connection's schema changes.
TENANT_LIMIT_SET_CALLS = True

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django_tenants.middleware.main.TenantMainMiddleware",
    "data_arch.routing.ReplicaRoutingMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # After django-tenants' (the host's tenant) and after authentication (TENANCY.AUTHORIZE
    # may look at request.user when the tenant header is on).
    "data_arch.tenancy.middleware.TenantMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "example_project" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

WSGI_APPLICATION = "example_project.wsgi.application"
ASGI_APPLICATION = "example_project.asgi.application"

# django-tenants switches search_path; it wraps django-prometheus' backend so DB metrics flow.
ORIGINAL_BACKEND = "django_prometheus.db.backends.postgresql"
_ENGINE = "django_tenants.postgresql_backend"
DATABASES = {
    "default": dj_database_url.parse(DATABASE_URL, engine=_ENGINE, conn_max_age=0),
    "replica": {
        **dj_database_url.parse(REPLICA_URL, engine=_ENGINE, conn_max_age=0),
        # Tests create their database on the primary; the streaming replica receives it.
        "TEST": {"MIRROR": "default"},
    },
}
DATABASE_ROUTERS = [
    "django_tenants.routers.TenantSyncRouter",
    "data_arch.routers.ReplicaRouter",
]

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": redis_db(REDIS_URL, 0),
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            # Bounded waits, so the cache helpers can fail open when Redis hangs.
            "SOCKET_CONNECT_TIMEOUT": 0.5,
            "SOCKET_TIMEOUT": 0.5,
        },
    }
}

CELERY_BROKER_URL = redis_db(REDIS_URL, 1)
CELERY_RESULT_BACKEND = redis_db(REDIS_URL, 2)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A task running when the broker goes away finishes and is acknowledged once the worker has
# reconnected (Celery 6 changes the default to cancelling it). data_arch's tasks are
# idempotent and leased either way.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
# Beat keeps its schedule in the database (django-celery-beat): data_arch's entries are copied
# there at start-up and shown in the admin (Periodic tasks).
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"

DATA_ARCH = {
    "ROUTER": {"PRIMARY": "default", "REPLICAS": ["replica"]},
    "CACHE": {"ALIAS": "default"},
    # Scheduled maintenance (data_arch.celery.beat_schedule(), merged in celery.py). The demo
    # shortens the partition interval so beat's first run comes within a minute.
    "CELERY": {"PARTITIONS_INTERVAL": float(os.environ.get("DATA_ARCH_PARTITIONS_INTERVAL", 3600))},
}

AUTH_PASSWORD_VALIDATORS = []
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"data_arch": {"handlers": ["console"], "level": "INFO"}},
}
