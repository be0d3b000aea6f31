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


@pytest.fixture(scope="session")
def _caching_tenant_schemas(django_db_setup, django_db_blocker):
    from tests.factories import ClientFactory

    with django_db_blocker.unblock():
        for schema in ("tenant_a", "tenant_b"):
            ClientFactory(schema_name=schema)
    return ("tenant_a", "tenant_b")


@pytest.fixture
def tenant_schemas(_caching_tenant_schemas):
    """The two tenant schemas, with their Client rows present for this test.

    Shadows the session fixture of tests/conftest.py for this directory: a transactional test
    elsewhere flushes the Client table, and a session fixture would then hand out tenants whose
    rows are gone. Here a missing row is re-created (the schema itself survives a flush).
    """
    from tests.factories import ClientFactory

    for schema in _caching_tenant_schemas:
        ClientFactory(schema_name=schema)
    return _caching_tenant_schemas
