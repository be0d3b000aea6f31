"""Test settings: the example project, pointed at the services the test harness started."""

from example_project.settings import *  # noqa: F401,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGGING = {"version": 1, "disable_existing_loggers": False}

# A second alias on the same standby, for tests of routing between two replicas.
DATABASES["replica_b"] = {**DATABASES["replica"], "TEST": {"MIRROR": "default"}}  # noqa: F405
