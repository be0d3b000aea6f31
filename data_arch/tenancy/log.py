"""A logging filter that stamps every record with the current tenant."""

from __future__ import annotations

import logging

from data_arch.tenancy.context import current_tenant

__all__ = ["TenantLogFilter"]


class TenantLogFilter(logging.Filter):
    """Adds ``record.tenant`` (the tenant's key, or ``"-"``): use ``%(tenant)s`` in a format.

    LOGGING = {"filters": {"tenant": {"()": "data_arch.tenancy.log.TenantLogFilter"}},
               "handlers": {"console": {..., "filters": ["tenant"]}}}
    """

    def filter(self, record: logging.LogRecord) -> bool:
        tenant = current_tenant()
        record.tenant = tenant.key if tenant is not None else "-"
        return True
