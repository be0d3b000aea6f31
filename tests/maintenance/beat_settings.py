"""Settings of the two-beat tests: short intervals and a queue of their own (only the worker
those tests start consumes it), shared by the beats and that worker."""

from tests.settings import *  # noqa: F401,F403

DATA_ARCH = {  # noqa: F405
    **DATA_ARCH,  # noqa: F405
    "CELERY": {**DATA_ARCH["CELERY"],  # noqa: F405
               "QUEUE": "beat_tests", "HEALTH_INTERVAL": 3, "WARM_INTERVAL": 10,
               "PARTITIONS_INTERVAL": 3600},
}
