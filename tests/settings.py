"""Test settings: the example project, pointed at the services the test harness started."""

from example_project.settings import *  # noqa: F401,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGGING = {"version": 1, "disable_existing_loggers": False}

# Models the cache tests cache, known at start-up in every process (the Celery worker and
# management commands included) without importing any cached function.
_CACHED_MODELS = ["billing.Invoice", "billing.Contact", "auth.User"]
DATA_ARCH = {  # noqa: F405
    **DATA_ARCH,  # noqa: F405
    "CACHE": {**DATA_ARCH["CACHE"], "MODELS": _CACHED_MODELS},  # noqa: F405
}
