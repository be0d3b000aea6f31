from __future__ import annotations

import dataclasses
from typing import Any

from django.core.management.base import CommandError, CommandParser

from data_arch.caching.warmers import WarmerError, registered_warmers, run_warmers, select
from data_arch.management.base import TenantCommand


class Command(TenantCommand):
    help = "Run the registered cache warmers, once or per tenant (--tenant / --all-tenants)."

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--warmer",
            action="append",
            metavar="NAME",
            help="run only this warmer (repeatable); default: all",
        )
        parser.add_argument("--list", action="store_true", help="list the registered warmers")
        parser.add_argument("--format", choices=("text", "json"), default="text")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["list"]:
            for name in registered_warmers():
                self.stdout.write(name)
            return
        try:
            select(options["warmer"])
        except WarmerError as exc:
            raise CommandError(f"--warmer: {exc}") from None
        results = [
            r
            for batch in self.for_each_tenant(options, lambda t: run_warmers(options["warmer"]))
            for r in batch
        ]
        if options["format"] == "json":
            self.write_json([dataclasses.asdict(r) for r in results])
        else:
            for r in results:
                where = r.tenant or "(shared)"
                if r.ok:
                    self.stdout.write(
                        self.style.SUCCESS(f"warmed {r.warmer} for {where} in {r.seconds:.3f}s")
                    )
                else:
                    self.stderr.write(self.style.ERROR(f"{r.warmer} failed for {where}: {r.error}"))
        failed = [r for r in results if not r.ok]
        if failed:
            raise CommandError(f"{len(failed)} of {len(results)} warmer run(s) failed")
