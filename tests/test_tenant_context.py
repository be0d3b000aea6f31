import asyncio
import threading

import pytest
from django.db import connections

from data_arch.tenancy import (
    InvalidTenantError,
    NoTenantError,
    Tenant,
    current_tenant,
    require_tenant,
    tenant_context,
    validate_schema_name,
)


def test_no_tenant_by_default_and_require_fails_closed():
    assert current_tenant() is None
    with pytest.raises(NoTenantError, match="no tenant is active"):
        require_tenant()


def test_nesting_restores_the_previous_tenant():
    with tenant_context(Tenant(pk=1, schema_name="a")):
        with tenant_context(Tenant(pk=2, schema_name="b")):
            assert require_tenant().pk == 2
        assert require_tenant().pk == 1
    assert current_tenant() is None


def test_tenant_switches_schema_on_primary_and_replica(tenant_schemas):
    with tenant_context(Tenant(pk=None, schema_name="tenant_b")):
        assert connections["default"].schema_name == "tenant_b"
        assert connections["replica"].schema_name == "tenant_b"
    assert connections["default"].schema_name == "public"
    assert connections["replica"].schema_name == "public"


def test_threads_and_tasks_start_without_the_tenant():
    seen = {}
    with tenant_context(Tenant(pk=7)):
        thread = threading.Thread(target=lambda: seen.setdefault("thread", current_tenant()))
        thread.start()
        thread.join()

        async def inner():
            with tenant_context(Tenant(pk=8)):
                await asyncio.sleep(0)
                return current_tenant().pk

        assert asyncio.run(inner()) == 8
        assert current_tenant().pk == 7
    assert seen["thread"] is None


@pytest.mark.parametrize(
    "name",
    ['a"b', "a;drop", "pg_catalog", "x" * 64, "é" * 32, "", "with space", "a\\b", None, 5],
)
def test_invalid_schema_names_are_refused(name):
    with pytest.raises(InvalidTenantError):
        validate_schema_name(name)


def test_none_is_never_a_tenant():
    with pytest.raises(InvalidTenantError, match="never reads None"):
        with tenant_context(None):
            pass
