from __future__ import annotations

import sys
import time
from typing import Any

from django.core.management.base import CommandError, CommandParser

from data_arch.backfills import runner
from data_arch.backfills.registry import BackfillError, get_backfill, registered_backfills
from data_arch.management.base import TenantCommand

ACTIONS = ("list", "run", "status", "pause", "resume", "cancel")


class Command(TenantCommand):
    help = ("Run and control registered backfills: list | run | status | pause | resume | cancel "
            "NAME [--tenant SCHEMA | --all-tenants] [--format json].")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=ACTIONS)
        parser.add_argument("name", nargs="?", help="the backfill (all of them for list/status)")
        super().add_arguments(parser)
        parser.add_argument("--format", choices=("text", "json"), default="text")
        parser.add_argument("--restart", action="store_true",
                            help="run: start over from the first row (also after a cancel)")
        parser.add_argument("--max-batches", type=int, metavar="N",
                            help="run: stop after N batches (per tenant and partition)")

    def handle(self, *args: Any, **options: Any) -> None:
        action, name = options["action"], options["name"]
        if action not in ("list", "status") and not name:
            raise CommandError(f"backfill {action} needs NAME (see: manage.py backfill list)")
        if options["max_batches"] is not None and options["max_batches"] < 1:
            raise CommandError(f"--max-batches must be >= 1, got {options['max_batches']}")
        if name:
            try:
                backfill = get_backfill(name)
            except BackfillError as exc:
                raise CommandError(f"NAME: {exc}") from None
            if (action == "run" and backfill.per_tenant
                    and not (options["tenant"] or options["all_tenants"])):
                raise CommandError(f"backfill {name!r} runs per tenant: pass --tenant SCHEMA or "
                                   "--all-tenants")
        try:
            getattr(self, f"do_{action}")(name, options)
        except runner.BackfillFailed as exc:
            raise CommandError(str(exc)) from None
        except BackfillError as exc:
            raise CommandError(str(exc)) from None

    # ------------------------------------------------------------------ actions

    def do_list(self, name: str | None, options: dict[str, Any]) -> None:
        items = registered_backfills()
        if options["format"] == "json":
            self.write_json([{"name": b.name, "table": b.table_name(), "key": b.key,
                              "per_tenant": b.per_tenant, "description": b.description}
                             for b in items.values()])
            return
        for backfill in items.values():
            scope = " (per tenant)" if backfill.per_tenant else ""
            text = f" -- {backfill.description}" if backfill.description else ""
            self.stdout.write(f"{backfill.name}: {backfill.table_name()} by {backfill.key}"
                              f"{scope}{text}")

    def do_run(self, name: str, options: dict[str, Any]) -> None:
        bar = _Reporter(self, options)
        results = [
            progress
            for batch in self.for_each_tenant(options, lambda tenant: runner.run(
                name, restart=options["restart"], max_batches=options["max_batches"],
                on_progress=bar.update))
            for progress in batch
        ]
        bar.close()
        self.report(results, options)

    def do_status(self, name: str | None, options: dict[str, Any]) -> None:
        self.report(runner.status(name, self._tenant_key(options)), options)

    def do_pause(self, name: str, options: dict[str, Any]) -> None:
        self._control(runner.pause, "paused", name, options)

    def do_resume(self, name: str, options: dict[str, Any]) -> None:
        self._control(runner.resume, "resumed", name, options)

    def do_cancel(self, name: str, options: dict[str, Any]) -> None:
        self._control(runner.cancel, "cancelled", name, options)

    # ------------------------------------------------------------------ helpers

    def _tenant_key(self, options: dict[str, Any]) -> str | None:
        tenants = self.tenants(options)
        if options.get("tenant") and tenants:
            from data_arch.tenancy import as_tenant

            return as_tenant(tenants[0]).key
        return None

    def _control(self, function: Any, verb: str, name: str, options: dict[str, Any]) -> None:
        count = function(name, self._tenant_key(options))
        if options["format"] == "json":
            self.write_json({"name": name, "action": options["action"], "cursors": count})
        else:
            self.stdout.write(self.style.SUCCESS(f"{verb} {count} cursor(s) of {name}"))

    def report(self, results: list[runner.Progress], options: dict[str, Any]) -> None:
        if options["format"] == "json":
            self.write_json([p.as_dict() for p in results])
            return
        for p in results:
            self.stdout.write(_line(p))
            if p.error:
                self.stderr.write(self.style.ERROR(p.error))


def _line(p: runner.Progress) -> str:
    where = "/".join(part for part in (p.tenant, p.partition) if part)
    head = f"{p.name}{' [' + where + ']' if where else ''}: {p.state}"
    total = f"/{p.rows_estimated}" if p.rows_estimated is not None else ""
    percent = f" ({p.percent:.0f}%)" if p.percent is not None else ""
    rate = f", {p.rate:.0f} rows/s" if p.rate else ""
    eta = f", ETA {p.eta_seconds:.0f}s" if p.eta_seconds is not None else ""
    extra = f", batch {p.batch_size}" if p.batch_size else ""
    if p.lock_timeouts:
        extra += f", {p.lock_timeouts} lock timeouts"
    if p.throttled_seconds:
        extra += f", throttled {p.throttled_seconds:.1f}s"
    return f"{head}, {p.rows_done}{total} rows{percent}{rate}{eta}{extra}"


class _Reporter:
    """A progress bar on a terminal; a plain line every few seconds otherwise; nothing for json."""

    def __init__(self, command: Command, options: dict[str, Any]) -> None:
        self.out = command.stderr
        self.quiet = options["format"] == "json" or options.get("verbosity", 1) < 1
        self.tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty() and self.out._out is sys.stderr
        self.every = 0.0 if options.get("verbosity", 1) >= 2 else 2.0
        self.last = 0.0
        self.drawn = False

    def update(self, p: runner.Progress) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if self.tty:
            percent = p.percent or 0.0
            filled = int(percent / 100 * 30)
            eta = f" ETA {p.eta_seconds:.0f}s" if p.eta_seconds is not None else ""
            rate = f" {p.rate:.0f}/s" if p.rate else ""
            self.out.write(f"\r{p.name} [{'#' * filled}{'.' * (30 - filled)}] {percent:5.1f}% "
                           f"{p.rows_done} rows{rate}{eta}   ", ending="")
            self.out.flush()
            self.drawn = True
        elif now - self.last >= self.every:
            self.last = now
            self.out.write(_line(p))
            self.out.flush()

    def close(self) -> None:
        if self.drawn:
            self.out.write("")
