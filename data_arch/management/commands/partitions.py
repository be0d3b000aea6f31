"""``manage.py partitions status|plan|apply``: a thin shell over data_arch.partitioning."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import CommandError, CommandParser

from data_arch.management.base import TenantCommand
from data_arch.partitioning import PartitionError, apply, plan, status


class Command(TenantCommand):
    help = "Show, plan and apply monthly partition maintenance (create ahead, drain default, retention)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["status", "plan", "apply"])
        super().add_arguments(parser)
        parser.add_argument("--model", action="append", metavar="app.Model", help="repeatable")
        parser.add_argument("--ahead", type=int, help="months to create ahead of the current one")
        parser.add_argument(
            "--retain", type=int, help="months to keep (retention by partition END)"
        )
        parser.add_argument("--database", default="default")
        parser.add_argument(
            "--dry-run", action="store_true", help="apply: print the plan, change nothing"
        )
        parser.add_argument("--yes", action="store_true", help="apply: do not ask before retention")
        parser.add_argument("--format", choices=["table", "json", "sql"], default="table")

    def handle(self, *args: Any, **options: Any) -> None:
        action, using = options["action"], options["database"]
        for label in ("ahead", "retain"):
            if options[label] is not None and options[label] < 1:
                raise CommandError(f"--{label} must be >= 1, got {options[label]}")
        try:
            if action == "status":
                reports = self.for_each_tenant(
                    options, lambda t: status(models_=options["model"], using=using)
                )
                self._print_status([r for group in reports for r in group], options["format"])
                return
            plans = self.for_each_tenant(
                options,
                lambda t: plan(
                    models_=options["model"],
                    using=using,
                    ahead=options["ahead"],
                    retain=options["retain"],
                ),
            )
            self._print_plans(plans, options["format"])
            pending = any(p.pending for p in plans)
            if action == "plan" or options["dry_run"] or not pending:
                if action == "plan" and pending:
                    sys.exit(2)
                return
            destructive = any(
                a.kind != "create" for p in plans for t in p.tables for a in t.actions
            )
            if destructive and not options["yes"] and not self._confirm():
                raise CommandError("aborted; nothing changed (pass --yes to skip the question)")
            results = self.for_each_tenant(
                options,
                lambda t: apply(
                    plan(
                        models_=options["model"],
                        using=using,
                        ahead=options["ahead"],
                        retain=options["retain"],
                    ),
                    on_progress=lambda label: (
                        self.stderr.write(label) if options["verbosity"] > 1 else None
                    ),
                ),
            )
        except PartitionError as exc:
            raise CommandError(str(exc)) from None
        done = sum(len(r.done) for r in results)
        moved = sum(r.rows_moved for r in results)
        self.stdout.write(
            self.style.SUCCESS(f"applied {done} action(s), moved {moved} row(s) from default")
        )

    def _confirm(self) -> bool:
        if not sys.stdin.isatty():
            return False
        return (
            input("Retention will detach/drop/archive partitions. Continue? [y/N] ").lower() == "y"
        )

    def _print_plans(self, plans: list[Any], fmt: str) -> None:
        if fmt == "json":
            self.write_json([p.to_dict() for p in plans])
        elif fmt == "sql":
            self.stdout.write("\n".join(p.sql() for p in plans if p.sql()) or "-- nothing to do")
        else:
            for p in plans:
                self.stdout.write(str(p))

    def _print_status(self, reports: list[dict[str, Any]], fmt: str) -> None:
        if fmt != "table":
            self.write_json(reports)
            return
        for r in reports:
            self.stdout.write(
                self.style.MIGRATE_HEADING(f"{r['model']} ({r['schema']}.{r['table']})")
            )
            for p in r["partitions"]:
                bounds = "DEFAULT" if p["default"] else f"[{p['start'][:10]}, {p['end'][:10]})"
                self.stdout.write(
                    f"  {p['name']:<40} {bounds:<26} {p['size_bytes']:>10} B  ~{p['estimated_rows']} rows"
                )
            self.stdout.write(
                f"  months ahead: {r['months_ahead']}   rows in default: {r['default_rows']}"
            )
            for problem in r["problems"]:
                self.stdout.write(self.style.WARNING(f"  ! {problem}"))
            for index, parts in r["index_drift"].items():
                self.stdout.write(
                    self.style.WARNING(f"  ! index {index} missing on {', '.join(parts)}")
                )
            for index in r["missing_indexes"]:
                self.stdout.write(
                    self.style.WARNING(f"  ! declared index {index} missing on the parent")
                )
        if not reports:
            self.stdout.write("no partitioned tables in this schema")
