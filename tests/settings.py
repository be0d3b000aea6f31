"""Test settings: the example project, pointed at the services the test harness started."""

from example_project.settings import *  # noqa: F401,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGGING = {"version": 1, "disable_existing_loggers": False}

# A second alias on the same standby, for tests of routing between two replicas.
DATABASES["replica_b"] = {**DATABASES["replica"], "TEST": {"MIRROR": "default"}}  # noqa: F405

# Maintenance tasks in tests: short leases and little jitter, so redelivery and fan-out are quick.
INSTALLED_APPS = [*INSTALLED_APPS, "tests.maintenance"]  # noqa: F405 -- its warmers
DATA_ARCH = {  # noqa: F405
    **DATA_ARCH,  # noqa: F405
    "CELERY": {"TENANT_JITTER": 0.2, "LEASE_SECONDS": 5, "TENANT_BATCH": 50},
}
