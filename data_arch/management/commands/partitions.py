"""``manage.py partitions status|plan|apply``: a thin shell over data_arch.partitioning."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db import DatabaseError, connections

from data_arch.management.base import TenantCommand
from data_arch.maintenance.jobs import apply_recorded, tenant_key
from data_arch.partitioning import (
    MaintenanceError,
    PartitionError,
    Plan,
    plan,
    status,
)
from data_arch.partitioning.plan import resolve_models, validate_months
from data_arch.tenancy import tenant_context


class Command(TenantCommand):
    help = (
        "Show, plan and apply monthly partition maintenance (create ahead, drain default, "
        "retention). apply always creates and drains; retention runs only with --yes (or a "
        "yes at the prompt), so a nightly `apply` without --yes keeps creating months."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["status", "plan", "apply"])
        super().add_arguments(parser)
        parser.add_argument("--model", action="append", metavar="app.Model", help="repeatable")
        parser.add_argument(
            "--ahead", type=int, help="months to create ahead of the current one (0..1200)"
        )
        parser.add_argument(
            "--retain", type=int, help="months to keep, retention by partition END (1..1200)"
        )
        parser.add_argument("--database", default="default")
        parser.add_argument(
            "--dry-run", action="store_true", help="apply: print the plan, change nothing"
        )
        parser.add_argument(
            "--yes", action="store_true", help="apply: run retention too (without it, skipped)"
        )
        parser.add_argument(
            "--cascade",
            action="store_true",
            help="plan/apply: retention in drop mode also drops the views that depend on an "
            "expiring partition (listed in the plan); default: PARTITIONS.DROP_CASCADE",
        )
        parser.add_argument("--format", choices=["table", "json", "sql"], default="table")

    def _validate(self, options: dict[str, Any]) -> None:
        """Every option checked before any tenant is visited: bad input changes nothing."""
        action = options["action"]
        if options.get("tenant") is not None and not options["tenant"].strip():
            raise CommandError("--tenant must name a tenant schema, got ''")
        if options["database"] not in connections:
            known = ", ".join(sorted(connections.settings))
            raise CommandError(
                f"--database: unknown alias {options['database']!r} (configured: {known})"
            )
        if connections[options["database"]].vendor != "postgresql":
            raise CommandError(f"--database {options['database']!r} is not PostgreSQL")
        if action == "status" and options["format"] == "sql":
            raise CommandError("--format sql is for plan and apply; status prints table or json")
        if action != "apply":
            for flag in ("dry_run", "yes"):
                if options[flag]:
                    raise CommandError(f"--{flag.replace('_', '-')} only applies to apply")
        if action == "status":
            for flag in ("ahead", "retain"):
                if options[flag] is not None:
                    raise CommandError(f"--{flag} only applies to plan and apply")
            if options["cascade"]:
                raise CommandError("--cascade only applies to plan and apply")
        try:
            validate_months(options["ahead"], options["retain"])
        except PartitionError as exc:
            raise CommandError(str(exc)) from None
        try:
            resolve_models(options["model"])
        except PartitionError as exc:
            message = str(exc)
            raise CommandError(message if message.startswith("--") else f"--model: {message}") from None

    def handle(self, *args: Any, **options: Any) -> None:
        self._validate(options)
        action, using = options["action"], options["database"]
        tenants = self.tenants(options)
        failures: list[str] = []

        selected = [None] if tenants is None else list(tenants)
        if action == "status":
            reports = self._each(
                selected, lambda i: status(models_=options["model"], using=using), failures,
                options,
            )
            self._print_status([r for group in reports.values() for r in group], options["format"])
            return self._finish(failures)
        plans = self._each(
            selected,
            lambda i: plan(
                models_=options["model"],
                using=using,
                ahead=options["ahead"],
                retain=options["retain"],
                cascade=True if options["cascade"] else None,
            ),
            failures,
            options,
        )
        self._print_plans(list(plans.values()), options["format"])
        pending = any(p.pending for p in plans.values())
        if action == "apply" and not options["dry_run"]:
            # What the plan could not include (a name taken, a dependent view) is a failure.
            failures.extend(
                f"{getattr(selected[i], 'schema_name', None) or 'public'}: "
                f"{t.schema}.{t.table}: {blocked}"
                for i, p in plans.items()
                for t in p.tables
                for blocked in t.blocked
            )
        # An apply with nothing to do still runs (a no-op) so it is recorded as a success.
        if action == "plan" or options["dry_run"]:
            self._finish(failures)
            if action == "plan" and pending:
                raise CommandError("changes pending (run `partitions apply`)", returncode=2)
            return
        if (
            any(p.has_retention for p in plans.values())
            and not options["yes"]
            and not self._confirm()
        ):
            skipped = sum(
                1
                for p in plans.values()
                for t in p.tables
                for a in t.actions
                if a.kind in ("drop", "detach", "archive")
            )
            self.stderr.write(
                self.style.WARNING(
                    f"retention skipped for {skipped} partition(s): pass --yes to run it; "
                    "creating and draining go ahead"
                )
            )
            plans = {i: p.without_retention() for i, p in plans.items()}
        # The plans printed above are the ones that run (each step re-checked as it goes).
        order = list(plans)  # tenants whose plan was read
        targets = [selected[i] for i in order]
        # Recorded like a scheduled run (admin "Maintenance runs", the dead man's switch).
        results = self._each(
            targets,
            lambda i: apply_recorded(
                plans[order[i]],
                tenant_key(targets[i]),
                on_progress=lambda label: (
                    self.stderr.write(label) if options["verbosity"] > 1 else None
                ),
                raise_on_failure=False,
            ),
            failures,
            options,
        )
        for position, result in results.items():
            where = getattr(targets[position], "schema_name", None) or "public"
            failures.extend(f"{where}: {f}" for f in result.failures)

        done = sum(len(r.done) for r in results.values())
        moved = sum(r.rows_moved for r in results.values())
        self.stdout.write(
            self.style.SUCCESS(f"applied {done} action(s), copied {moved} row(s) from default")
        )
        self._finish(failures)

    def _each(
        self,
        selected: list[Any],
        work: Callable[[int], Any],
        failures: list[str],
        options: dict[str, Any],
    ) -> dict[int, Any]:
        """``work(i)`` per selected tenant in its context; one tenant's failure never stops the
        others (it is recorded in ``failures`` and the command exits non-zero at the end)."""
        results: dict[int, Any] = {}
        for number, tenant in enumerate(selected):
            name = getattr(tenant, "schema_name", None) or (str(tenant) if tenant else "public")
            if len(selected) > 1 and options["verbosity"] >= 1:
                self.stderr.write(f"[{number + 1}/{len(selected)}] {name}")
            try:
                if tenant is None:
                    results[number] = work(number)
                else:
                    with tenant_context(tenant):
                        results[number] = work(number)
            except (DatabaseError, MaintenanceError, PartitionError, ValueError,
                    OverflowError) as exc:
                first = (str(exc).strip().splitlines() or [repr(exc)])[0]
                failures.append(f"{name}: {type(exc).__name__}: {first}")
        return results

    def _finish(self, failures: list[str]) -> None:
        if not failures:
            return
        for failure in failures:
            self.stderr.write(self.style.ERROR(f"failed: {failure}"))
        raise CommandError(f"{len(failures)} failure(s); everything else was maintained")

    def _confirm(self) -> bool:
        if not sys.stdin.isatty():
            return False
        return (
            input("Retention will detach/drop/archive partitions. Continue? [y/N] ").lower() == "y"
        )

    def _print_plans(self, plans: list[Plan], fmt: str) -> None:
        if fmt == "json":
            self.write_json([p.to_dict() for p in plans])
        elif fmt == "sql":
            self.stdout.write("\n".join(p.sql() for p in plans if p.sql()) or "-- nothing to do")
        else:
            for p in plans:
                self.stdout.write(str(p))

    def _print_status(self, reports: list[Any], fmt: str) -> None:
        if fmt == "json":
            self.write_json([r.to_dict() for r in reports])
            return
        for r in reports:
            self.stdout.write(self.style.MIGRATE_HEADING(f"{r.model} ({r.schema}.{r.table})"))
            for p in r.partitions:
                bounds = "DEFAULT" if p.default else f"[{p.start[:10]}, {p.end[:10]})"
                pending = "  (pending detach)" if p.detach_pending else ""
                self.stdout.write(
                    f"  {p.name:<40} {bounds:<26} {p.size_bytes:>10} B  "
                    f"~{p.estimated_rows} rows{pending}"
                )
            self.stdout.write(f"  months ahead: {r.months_ahead}   rows in default: {r.default_rows}")
            for problem in r.problems:
                self.stdout.write(self.style.WARNING(f"  ! {problem}"))
            for index, parts in r.index_drift.items():
                self.stdout.write(
                    self.style.WARNING(f"  ! index {index} missing on {', '.join(parts)}")
                )
            for index in r.missing_indexes:
                self.stdout.write(
                    self.style.WARNING(f"  ! declared index {index} missing on the parent")
                )
        if not reports:
            self.stdout.write("no partitioned tables in this schema")
