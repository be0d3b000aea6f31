"""The tests' settings with the cache (and so the maintenance leases) on a Redis of its own,
``DATA_ARCH_TEST_CACHE_REDIS_URL``; the broker and the result backend stay on ``REDIS_URL``."""

import os

from tests.settings import *  # noqa: F401,F403

CACHES = {
    **CACHES,  # noqa: F405
    "default": {**CACHES["default"],  # noqa: F405
                "LOCATION": os.environ["DATA_ARCH_TEST_CACHE_REDIS_URL"]},
}
