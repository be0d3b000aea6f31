"""``manage.py tenancy status``: row-level tables, their RLS state and each tenant's rows."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from data_arch.management.base import TenantCommand, database_alias
from data_arch.tenancy.status import as_dict, table_status


class Command(TenantCommand):
    help = "Show row-level tenant tables: RLS enabled/forced, policy, owner, rows per tenant."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["status"], help="what to do")
        super().add_arguments(parser)
        parser.add_argument("--database", default="default", help="database alias")
        parser.add_argument("--format", choices=["table", "json"], default="table")

    def handle(self, *args: Any, **options: Any) -> None:
        database_alias(options["database"])
        reports = self.for_each_tenant(
            options,
            lambda tenant: {
                "tenant": None if tenant is None else getattr(tenant, "schema_name", str(tenant)),
                "tables": [as_dict(s) for s in table_status(options["database"])],
            },
        )
        if options["format"] == "json":
            self.write_json(reports)
            return
        for report in reports:
            self.stdout.write(self.style.MIGRATE_HEADING(f"tenant: {report['tenant'] or '-'}"))
            for table in report["tables"]:
                flags = "RLS forced" if table["rls_forced"] and table["policy"] else (
                    self.style.WARNING("RLS NOT FORCED / NO POLICY"))
                rows = "-" if table["rows"] is None else table["rows"]
                self.stdout.write(f"  {table['table']:<32} {flags:<24} owner={table['owner']} "
                                  f"rows={rows}")
