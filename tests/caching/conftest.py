import pytest

from data_arch.caching import metrics, reset_engines


@pytest.fixture
def cache_settings(settings):
    """Edit DATA_ARCH['CACHE'] for one test: ``cache_settings(L1=True, STALE_TTL=5)``."""

    def apply(**values):
        data_arch = {key: dict(value) for key, value in settings.DATA_ARCH.items()}
        data_arch.setdefault("CACHE", {}).update(values)
        settings.DATA_ARCH = data_arch
        reset_engines()

    return apply


@pytest.fixture(autouse=True)
def clean_cache(redis_cache):
    """Each test starts with an empty Redis, zeroed counters and fresh engines."""
    reset_engines()
    metrics.reset()
    yield redis_cache
    reset_engines()


@pytest.fixture
def redis_client(clean_cache):
    from django_redis import get_redis_connection

    return get_redis_connection("default")


@pytest.fixture
def loads(redis_client):
    """A loader-call counter shared by every process: ``loads.counted(fn)`` / ``loads.count``."""

    class Loads:
        key = "test:loads"

        @property
        def count(self):
            return int(redis_client.get(self.key) or 0)

        def hit(self):
            redis_client.incr(self.key)

    redis_client.delete(Loads.key)
    return Loads()
