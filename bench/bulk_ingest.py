"""Bulk ingest into a partitioned table: data_arch's ``copy_rows()`` (COPY) next to Django's
``bulk_create()``.

    python bench/bulk_ingest.py [--quick]   # throwaway PostgreSQL (no replica needed)

A data_arch-partitioned events table (``id, at, kind, payload``, index on ``at``, three
months and a default). Each round writes the same 50 000 rows (``--quick``: 20 000), spread
over the three months, with each method, in alternating order; 4 rounds (``--quick``: 2):

1. ``copy_rows(Model, instances)`` next to ``bulk_create(instances, batch_size=2000)`` (one
   INSERT of 2000 rows per round trip); the instances are built before the clock starts, and
   each time covers conversion, sending and commit;
2. ``copy_rows(Model, tuples, fields=[...])`` -- rows as they come from a file or a queue --
   next to ``bulk_create``, whose time then includes building the instances;
3. a partitioned row-level ``TenantModel`` with Row-Level Security, written in a tenant's
   context by an ordinary role (half the rounds): ``copy_rows`` there stages the rows in a
   temporary table (PostgreSQL refuses ``COPY FROM`` under RLS) and moves them with one
   ``INSERT ... SELECT``.

Reported: rows per second over all rounds.
"""

from __future__ import annotations

import datetime as dt
import sys
import time

from _common import Report, arguments, create_table, django_setup, drop_tables, event_model
from _common import services as bench_services

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


ROLE = "bench_ingest_app"


def row_level(per_round: int, rounds: int, step: dt.timedelta) -> dict:
    """copy_rows() and bulk_create() into a partitioned TenantModel with Row-Level Security,
    connected as an ordinary role (not owner, not superuser, not BYPASSRLS)."""
    from django.core.management import call_command
    from django.db import connections, models, transaction

    from data_arch.conf import tenancy_settings
    from data_arch.partitioning import MonthlyPartitioning, apply, copy_rows, plan
    from data_arch.tenancy import Tenant, tenant_context
    from data_arch.tenancy import sql as tenancy_sql
    from data_arch.tenancy.models import TenantModel
    from example_project.customers.models import Client

    call_command("migrate_schemas", "--shared", verbosity=0)  # tenants, the RLS verifier

    class IngestReading(TenantModel):
        at = models.DateTimeField()
        kind = models.CharField(max_length=16)
        payload = models.TextField()

        class Meta:
            app_label = "billing"
            db_table = "bench_ingest_rls"
            constraints = [  # noqa: RUF012 -- Django's Meta option
                MonthlyPartitioning(field="at", name="bench_ingest_rls_pk")
            ]

    create_table(IngestReading)
    made = apply(plan(models_=["billing.IngestReading"], ahead=2, now=START))
    assert made.ok, made.to_dict()
    client = Client(schema_name="bench_ingest_tenant", name="bench")
    client.auto_create_schema = False
    client.save()
    default = connections["default"]
    config = tenancy_settings()
    verify = (f"public.{default.ops.quote_name(tenancy_sql.VERIFY_FUNCTION)}"
              if config.signed_context else None)
    with default.cursor() as cursor:
        for statement, params in tenancy_sql.enable_rls(
            default.ops.quote_name, "bench_ingest_rls", "tenant_id", "bigint",
            config.rls_setting, verify,
        ):
            cursor.execute(statement, params)
        cursor.execute(f"DROP ROLE IF EXISTS {ROLE}")
        cursor.execute(f"CREATE ROLE {ROLE} LOGIN NOSUPERUSER NOBYPASSRLS")
        cursor.execute(f"GRANT USAGE ON SCHEMA public TO {ROLE}")
        cursor.execute(f"GRANT SELECT, INSERT ON bench_ingest_rls TO {ROLE}")
        cursor.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {ROLE}")
    connections.settings["app"] = {**default.settings_dict, "USER": ROLE, "PASSWORD": ""}
    seconds = {"copy_rows": 0.0, "bulk_create": 0.0}
    try:
        with tenant_context(Tenant(pk=client.pk)):
            for round_ in range(rounds):
                order = ("copy_rows", "bulk_create") if round_ % 2 == 0 else (
                    "bulk_create", "copy_rows")
                for name in order:
                    rows = [IngestReading(at=START + step * n, kind="view", payload=f"{n:08d}" * 8)
                            for n in range(per_round)]
                    started = time.perf_counter()
                    if name == "copy_rows":
                        copy_rows(IngestReading, rows, using="app")
                    else:
                        with transaction.atomic(using="app"):
                            IngestReading.objects.using("app").bulk_create(rows, batch_size=2000)
                    seconds[name] += time.perf_counter() - started
            visible = IngestReading.objects.using("app").count()
        assert visible == 2 * rounds * per_round, visible
    finally:
        connections["app"].close()
        with default.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS bench_ingest_rls CASCADE")
            cursor.execute(f"DROP OWNED BY {ROLE}")
            cursor.execute(f"DROP ROLE {ROLE}")
        Client.objects.filter(pk=client.pk).delete()
    written = rounds * per_round
    return {"rows_per_method": written, "rounds": rounds,
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
            "rows_per_second": {k: round(written / v) for k, v in seconds.items()}}


def main() -> int:
    options = arguments(__doc__)
    per_round = 20_000 if options.quick else 50_000
    rounds = 2 if options.quick else 4
    with bench_services(replica=False):
        django_setup()
        from django.db import connection, transaction

        from data_arch.partitioning import apply, copy_rows, plan

        model = event_model("IngestEvent", "bench_ingest")
        create_table(model)
        made = apply(plan(models_=["data_arch.IngestEvent"], ahead=2, now=START))
        assert made.ok, made.to_dict()
        step = dt.timedelta(days=89) / per_round

        def values(n: int) -> tuple:
            return (START + step * n, ("view", "click", "login")[n % 3], f"{n:08d}" * 8)

        def instances() -> list:
            return [model(at=at, kind=kind, payload=payload)
                    for at, kind, payload in map(values, range(per_round))]

        def copy_instances(rows: list) -> None:
            assert copy_rows(model, rows) == per_round

        def copy_tuples(rows: list) -> None:
            assert copy_rows(model, rows, fields=["at", "kind", "payload"]) == per_round

        def bulk_create(rows: list) -> None:
            with transaction.atomic():
                model.objects.bulk_create(rows, batch_size=2000)

        methods = (
            ("copy_rows", copy_instances, instances),
            ("bulk_create", bulk_create, instances),
            ("copy_rows_tuples", copy_tuples, lambda: [values(n) for n in range(per_round)]),
        )
        seconds = dict.fromkeys([name for name, _, _ in methods] + ["instances"], 0.0)
        for round_ in range(rounds):
            for name, work, make in methods if round_ % 2 == 0 else reversed(methods):
                started = time.perf_counter()
                rows_ = make()
                if make is instances:
                    seconds["instances"] += (time.perf_counter() - started) / 2
                started = time.perf_counter()
                work(rows_)
                seconds[name] += time.perf_counter() - started
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM bench_ingest_default")
            in_default = cursor.fetchone()[0]
            cursor.execute("SELECT count(*) FROM bench_ingest")
            total = cursor.fetchone()[0]
        assert total == 3 * rounds * per_round and in_default == 0, (total, in_default)
        drop_tables("bench_ingest")
        rls = row_level(per_round, max(1, rounds // 2), step)

        written = rounds * per_round
        rate = {name: round(written / s) for name, s in seconds.items()}
        report = Report("bulk_ingest", "Bulk ingest into a partitioned table", options.quick)
        report.details = {"rows_per_method": written, "rounds": rounds,
                          "seconds": {k: round(v, 3) for k, v in seconds.items()},
                          "rows_per_second": rate}
        report.add("rows per second, from model instances", "rows/s", rate["copy_rows"],
                   "bulk_create(batch_size=2000)", rate["bulk_create"],
                   target=(">=", 5), target_text="≥ 5 ×",
                   note="both convert every instance's values in Python the way save() does; "
                        "PostgreSQL's own work per row (partition routing, two indexes) is "
                        "the same for both")
        from_tuples = round(written / (seconds["bulk_create"] + seconds["instances"]))
        report.details["bulk_create_with_instances_rows_per_second"] = from_tuples
        report.add("rows per second, from tuples (a file, a queue)", "rows/s",
                   rate["copy_rows_tuples"], "bulk_create, instances built from them",
                   from_tuples, target=(">=", 5), target_text="≥ 5 ×")
        report.details["row_level_rls"] = rls
        report.add("rows per second, row-level tenant model under RLS, as the application role",
                   "rows/s", rls["rows_per_second"]["copy_rows"], "bulk_create(batch_size=2000)",
                   rls["rows_per_second"]["bulk_create"], target=(">=", 5), target_text="≥ 5 ×",
                   note="PostgreSQL refuses COPY FROM under RLS: copy_rows copies into a "
                        "temporary table, then one INSERT ... SELECT the policy checks")
        report.write(options.result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
