from __future__ import annotations

import dataclasses
import json
import reprlib
from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError, CommandParser

from data_arch.backfills.lint import lint
from data_arch.management.base import database_alias


class Command(BaseCommand):
    help = ("Lint migrations for operations that rewrite or lock an existing table (exit status "
            "1 on a hazard). Reads only migration files; --pending also reads which are applied.")
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("app_label", nargs="*", help="apps to lint (default: all)")
        parser.add_argument("--pending", metavar="DATABASE", nargs="?", const="default",
                            help="only migrations not applied on this database yet")
        parser.add_argument("--format", choices=("text", "json"), default="text")

    def handle(self, *args: Any, **options: Any) -> None:
        labels = options["app_label"] or None
        for label in labels or ():
            try:
                apps.get_app_config(label)
            except LookupError:
                raise CommandError(f"app_label: no installed app {reprlib.repr(label)}") from None
        if options["pending"] is not None:
            database_alias(options["pending"], "--pending")
        hazards = lint(labels, pending_on=options["pending"])
        if options["format"] == "json":
            self.stdout.write(json.dumps([dataclasses.asdict(h) for h in hazards], indent=2))
        else:
            for hazard in hazards:
                self.stdout.write(self.style.ERROR(str(hazard)))
            if not hazards:
                self.stdout.write(self.style.SUCCESS("no migration hazards"))
        if hazards:
            raise SystemExit(1)
