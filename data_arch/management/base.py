"""The ``--tenant`` / ``--all-tenants`` options every data_arch command shares."""

from __future__ import annotations

import json
import reprlib
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from data_arch.tenancy import InvalidTenantError, iter_tenants, resolve_tenant_by, tenant_context


def database_alias(value: str, option: str = "--database") -> str:
    """``value`` when it is a configured database alias, else a CommandError naming them."""
    if value not in connections:
        known = ", ".join(sorted(connections.settings))
        raise CommandError(f"{option}: unknown alias {reprlib.repr(value)} (configured: {known})")
    return value


class TenantCommand(BaseCommand):
    """A command that runs once, or once per tenant (``--tenant SCHEMA`` / ``--all-tenants``).

    ``--tenant`` is looked up by ``TENANCY.LOOKUP_FIELD`` (the schema name by default); an
    unknown or malformed value is a CommandError before any work starts.
    """

    def add_arguments(self, parser: CommandParser) -> None:
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--tenant", metavar="SCHEMA", help="run for this tenant's schema only")
        group.add_argument("--all-tenants", action="store_true", help="run for every tenant")

    def tenants(self, options: dict[str, Any]) -> list[Any] | None:
        """The tenants to run for; None means 'no tenant' (shared/public data)."""
        if options.get("tenant") is not None:
            try:
                return [resolve_tenant_by(options["tenant"])]
            except InvalidTenantError as exc:
                raise CommandError(f"--tenant: {exc}") from None
        if options.get("all_tenants"):
            return list(iter_tenants())
        return None

    def for_each_tenant(self, options: dict[str, Any], work: Callable[[Any], Any]) -> list[Any]:
        """Run ``work(tenant)`` per selected tenant inside its context, showing progress."""
        tenants = self.tenants(options)
        if tenants is None:
            return [work(None)]
        results = []
        total = len(tenants)
        for number, tenant in enumerate(tenants, 1):
            if total > 1 and options.get("verbosity", 1) >= 1:
                label = getattr(tenant, "schema_name", None) or str(tenant)
                self.stderr.write(f"[{number}/{total}] {label}")
            with tenant_context(tenant):
                results.append(work(tenant))
        return results

    def write_json(self, data: Any) -> None:
        self.stdout.write(json.dumps(data, indent=2, default=str))
