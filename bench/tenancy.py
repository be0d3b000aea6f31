"""Row-level tenancy as the number of tenants grows, and next to schema-per-tenant (django-tenants).

    python bench/tenancy.py [--quick]   # starts a throwaway PostgreSQL

1. Flat with the tenant count: one table per size holding 10, 1,000 and 10,000 tenants with the
   same rows per tenant (100; ``--quick``: 20), and one tenant-scoped indexed query through the
   ORM -- an entry by number inside ``tenant_context``, the ``(tenant_id, number)`` unique index
   -- on Setup B (the plain PostgreSQL backend) as an ordinary role under the signed
   Row-Level Security policy, the default. The three sizes run interleaved in rounds, random
   tenants; target: 10,000 (and 1,000) tenants within 1.2 x of 10.
2. Schema-per-tenant vs row-level for the same data: N tenants (500; ``--quick``: 50) with the
   same rows each, set up tenant by tenant (one transaction each) -- django-tenants' way, a
   schema with its table and unique index per tenant, against data_arch's, the tenant's rows in
   one shared table -- and the same query, interleaved: django-tenants' backend switching the
   schema (``set_schema``, which issues ``SET search_path``) against data_arch's row-level
   model. The django-tenants connection runs without data_arch's execute wrappers (as in a
   project without data_arch). Setup cost: wall time and catalog relations; for a sense of
   scale the full run also times django-tenants creating one tenant of the example project
   (``Client.save()``, which migrates its tenant apps into a new schema).

Every table, schema and role made here is dropped at the end.
"""

from __future__ import annotations

import random
import statistics
import sys
import time

from _common import Report, arguments, django_setup
from _common import services as bench_services

ROLE = "data_arch_bench_tenancy"
ALIAS = "bench_tenancy_app"  # the plain backend, as ROLE (row-level, Setup B)
OWNER_ALIAS = "bench_tenancy_owner"  # the plain backend, as the tables' owner: no policy applies
SCHEMA_ALIAS = "bench_tenancy_schemas"  # django-tenants' backend, as ROLE
SIZES = (10, 1_000, 10_000)
PREFIX = "bench_tenancy"


def _table_sql(quote, table: str) -> list[str]:
    return [
        (f"CREATE TABLE {quote(table)} (id bigserial, tenant_id bigint NOT NULL, "
         "number varchar(32) NOT NULL, total_cents bigint NOT NULL, "
         "PRIMARY KEY (tenant_id, id), UNIQUE (tenant_id, number))"),
        f'GRANT SELECT ON {quote(table)} TO "{ROLE}"',
    ]


def _rls(cursor, quote, table: str) -> None:
    from data_arch.conf import tenancy_settings
    from data_arch.tenancy import sql

    function = f"{quote('public')}.{quote(sql.VERIFY_FUNCTION)}"
    setting = tenancy_settings().rls_setting
    for statement, params in sql.enable_rls(quote, table, "tenant_id", "bigint", setting, function):
        cursor.execute(statement, params)


def _model(table: str, base):
    from django.db import models

    class Meta:
        app_label = "data_arch"
        db_table = table
        managed = False

    attrs = {
        "__module__": __name__, "Meta": Meta,
        "number": models.CharField(max_length=32), "total_cents": models.BigIntegerField(),
    }
    return type(f"Bench{table.title().replace('_', '')}", (base,), attrs)


def spread(values: list[float]) -> float:
    """Interquartile range of the rounds, in % of their median: how noisy the machine was."""
    q1, _, q3 = statistics.quantiles(values, n=4)
    return round(100 * (q3 - q1) / statistics.median(values), 1)


SPREAD: dict[str, float] = {}


def _rounds(variants: dict, rounds: int, per_round: int) -> dict[str, float]:
    """Median microseconds per query of each variant over interleaved rounds (the spread of
    the rounds goes to :data:`SPREAD`)."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for round_number in range(rounds + 1):  # the first round warms up and is dropped
        for name, query in variants.items():
            started = time.perf_counter()
            for i in range(per_round):
                query(i)
            if round_number:
                samples[name].append((time.perf_counter() - started) / per_round * 1e6)
    SPREAD.update({name: spread(values) for name, values in samples.items()})
    return {name: round(statistics.median(values), 2) for name, values in samples.items()}


def main() -> int:
    options = arguments(__doc__)
    quick = options.quick
    rows_per_tenant = 20 if quick else 100
    schema_tenants, schema_rows = (50, 100) if quick else (500, 100)
    rounds, per_round = (8, 100) if quick else (30, 200)
    report = Report("tenancy", "Row-level tenancy: tenant count, schema-per-tenant", quick)

    with bench_services(replica=False) as services:
        django_setup()
        from django.db import connections, transaction

        from data_arch.tenancy import Tenant, sql, tenant_context
        from data_arch.tenancy.models import TenantModel
        from data_arch.tenancy.rls import secret_pads

        owner = connections["default"]
        quote = owner.ops.quote_name
        with owner.cursor() as cursor:
            cursor.execute(f'DROP ROLE IF EXISTS "{ROLE}"')
            cursor.execute(f'CREATE ROLE "{ROLE}" LOGIN NOSUPERUSER NOBYPASSRLS')
            cursor.execute(f'GRANT USAGE ON SCHEMA public TO "{ROLE}"')
            cursor.execute("SELECT to_regclass(%s) IS NULL", [f"public.{sql.SECRET_TABLE}"])
            own_secret = cursor.fetchone()[0]
            for statement, params in sql.signed_context(quote, "public", *secret_pads()):
                cursor.execute(statement, params)
        base = {**owner.settings_dict, "USER": ROLE, "PASSWORD": ""}
        connections.settings[ALIAS] = {**base, "ENGINE": "django.db.backends.postgresql"}
        connections.settings[OWNER_ALIAS] = {**owner.settings_dict,
                                             "ENGINE": "django.db.backends.postgresql"}
        connections.settings[SCHEMA_ALIAS] = {**base, "ENGINE": "django_tenants.postgresql_backend"}
        schemas = [f"{PREFIX}_{n}" for n in range(schema_tenants)]
        try:
            # ---------------------------------------------------------------- 1. tenant count
            loaded: dict[int, float] = {}
            models = {}
            with owner.cursor() as cursor:
                for size in SIZES:
                    table = f"{PREFIX}_t{size}"
                    cursor.execute(f"DROP TABLE IF EXISTS {quote(table)}")
                    for statement in _table_sql(quote, table):
                        cursor.execute(statement)
                    _rls(cursor, quote, table)
                    started = time.perf_counter()
                    cursor.execute(
                        f"INSERT INTO {quote(table)} (tenant_id, number, total_cents) "
                        "SELECT t, 'N' || i, i FROM generate_series(1, %s) t, "
                        "generate_series(1, %s) i", [size, rows_per_tenant],
                    )
                    cursor.execute(f"VACUUM ANALYZE {quote(table)}")
                    loaded[size] = round(time.perf_counter() - started, 2)
                    models[size] = _model(table, TenantModel)
            print(f"Loaded {rows_per_tenant} rows per tenant: "
                  + ", ".join(f"{s:,} tenants in {t} s" for s, t in loaded.items()))

            def scoped_query(model, tenants: int, seed: int):
                chooser = random.Random(seed)

                def query(_i: int) -> None:
                    with tenant_context(Tenant(pk=chooser.randint(1, tenants))):
                        model.objects.using(ALIAS).get(
                            number=f"N{chooser.randint(1, rows_per_tenant)}")
                return query

            us = _rounds({f"{size:,} tenants": scoped_query(models[size], size, size)
                          for size in SIZES}, rounds, per_round)
            print(f"Tenant-scoped query by number (ORM, signed RLS), median us over {rounds} "
                  f"rounds of {per_round}: " + ", ".join(f"{k}: {v}" for k, v in us.items()))
            base_us = us[f"{SIZES[0]:,} tenants"]
            for size in SIZES[1:]:
                label = f"{size:,} tenants"
                row = report.add(
                    f"tenant-scoped indexed query (ORM, signed RLS) at {size:,} tenants",
                    "us", us[label], f"the same at {SIZES[0]} tenants", base_us,
                    target=("<=", 1.2), target_text="≤ 1.2 ×",
                    note=f"{rows_per_tenant} rows per tenant",
                )
                if not row.met:
                    row.note += (f"; rounds spread {SPREAD[label]} % / "
                                 f"{SPREAD[f'{SIZES[0]:,} tenants']} % (interquartile range): "
                                 "the machine's load moves a round by that much")

            # ------------------------------------------------- 2. schema-per-tenant vs rows
            row_table = f"{PREFIX}_rows"
            with owner.cursor() as cursor:
                cursor.execute(f"DROP TABLE IF EXISTS {quote(row_table)}")
                for schema in schemas:
                    cursor.execute(f"DROP SCHEMA IF EXISTS {quote(schema)} CASCADE")
                cursor.execute("SELECT count(*) FROM pg_class")
                relations_before = cursor.fetchone()[0]
                started = time.perf_counter()
                for statement in _table_sql(quote, row_table):
                    cursor.execute(statement)
                _rls(cursor, quote, row_table)
                for tenant in range(1, schema_tenants + 1):
                    with transaction.atomic(using="default"):
                        cursor.execute(
                            f"INSERT INTO {quote(row_table)} (tenant_id, number, total_cents) "
                            "SELECT %s, 'N' || i, i FROM generate_series(1, %s) i",
                            [tenant, schema_rows],
                        )
                rows_setup = time.perf_counter() - started
                cursor.execute("SELECT count(*) FROM pg_class")
                relations_rows = cursor.fetchone()[0] - relations_before
                started = time.perf_counter()
                for schema in schemas:
                    with transaction.atomic(using="default"):
                        cursor.execute(f"CREATE SCHEMA {quote(schema)}")
                        cursor.execute(
                            f"CREATE TABLE {quote(schema)}.entry (id bigserial PRIMARY KEY, "
                            "number varchar(32) NOT NULL UNIQUE, total_cents bigint NOT NULL)"
                        )
                        cursor.execute(
                            f"INSERT INTO {quote(schema)}.entry (number, total_cents) "
                            "SELECT 'N' || i, i FROM generate_series(1, %s) i", [schema_rows],
                        )
                        cursor.execute(f'GRANT USAGE ON SCHEMA {quote(schema)} TO "{ROLE}"')
                        cursor.execute(f'GRANT SELECT ON {quote(schema)}.entry TO "{ROLE}"')
                schemas_setup = time.perf_counter() - started
                cursor.execute("SELECT count(*) FROM pg_class")
                relations_schemas = cursor.fetchone()[0] - relations_before - relations_rows
                cursor.execute(f"ANALYZE {quote(row_table)}")
            print(f"Setup of {schema_tenants} tenants x {schema_rows} rows: row-level "
                  f"{rows_setup:.2f} s ({relations_rows} relations), schema-per-tenant "
                  f"{schemas_setup:.2f} s ({relations_schemas} relations)")

            from django.db import models as dj_models

            class SchemaEntry(dj_models.Model):
                number = dj_models.CharField(max_length=32)
                total_cents = dj_models.BigIntegerField()

                class Meta:
                    app_label = "data_arch"
                    db_table = "entry"
                    managed = False

            row_model = _model(row_table, TenantModel)
            tenants_connection = connections[SCHEMA_ALIAS]
            tenants_connection.set_schema_to_public()
            tenants_connection.ensure_connection()
            from data_arch import wiring

            # A project with django-tenants alone: none of data_arch's wrappers on its queries.
            tenants_connection.execute_wrappers[:] = [
                w for w in tenants_connection.execute_wrappers if w not in wiring.WRAPPERS
            ]
            row_chooser, owner_chooser = random.Random(1), random.Random(1)
            schema_chooser = random.Random(1)

            def row_level(_i: int, alias: str = ALIAS, chooser=row_chooser) -> None:
                with tenant_context(Tenant(pk=chooser.randint(1, schema_tenants))):
                    row_model.objects.using(alias).get(
                        number=f"N{chooser.randint(1, schema_rows)}")

            def row_level_owner(_i: int) -> None:
                row_level(_i, OWNER_ALIAS, owner_chooser)

            def schema_per_tenant(_i: int) -> None:
                tenants_connection.set_schema(schemas[schema_chooser.randrange(schema_tenants)])
                SchemaEntry.objects.using(SCHEMA_ALIAS).get(
                    number=f"N{schema_chooser.randint(1, schema_rows)}")

            both = _rounds({"row-level": row_level, "row-level, no policy": row_level_owner,
                            "schema-per-tenant": schema_per_tenant}, rounds, per_round)
            tenants_connection.set_schema_to_public()
            print(f"Same query, {schema_tenants} tenants: row-level {both['row-level']} us "
                  f"(as the owner, no policy: {both['row-level, no policy']} us), "
                  f"schema-per-tenant {both['schema-per-tenant']} us")
            report.add(
                f"tenant-scoped indexed query, {schema_tenants} tenants: row-level (signed RLS)",
                "us", both["row-level"], "django-tenants schema-per-tenant (set_schema)",
                both["schema-per-tenant"],
                note=f"each query for a random tenant; row-level as the owner, no policy: "
                     f"{both['row-level, no policy']:.0f} us",
            )
            report.add(
                f"setup of {schema_tenants} tenants x {schema_rows} rows, one transaction each",
                "s", round(rows_setup, 3), "a schema + table + unique index each",
                round(schemas_setup, 3),
                note=f"catalog relations {relations_rows} vs {relations_schemas}",
            )
            details = {
                "rows_per_tenant": rows_per_tenant, "rounds": rounds, "per_round": per_round,
                "load_s": {str(k): v for k, v in loaded.items()}, "scoped_query_us": us,
                "rounds_spread_pct": dict(SPREAD),
                "schema_vs_rows": {
                    "tenants": schema_tenants, "rows_per_tenant": schema_rows, "query_us": both,
                    "setup_s": {"row-level": round(rows_setup, 3),
                                "schema-per-tenant": round(schemas_setup, 3)},
                    "catalog_relations": {"row-level": relations_rows,
                                          "schema-per-tenant": relations_schemas},
                },
            }
            if quick:
                pass  # the example project's migrations alone take longer than a quick run
            elif services.primary is None:
                report.skip("creating a tenant of the example project",
                            "it migrates the example project's apps: only on a throwaway server")
            else:
                own_secret = False  # the migrated billing policies now use the function too
                details["client_save_s"] = saved = _client_save()
                report.add(
                    "create one tenant of the example project (Client.save())", "s",
                    saved["row-level"], "django-tenants (a schema, its tenant apps migrated)",
                    saved["schema-per-tenant"], note="row-level: the tenant's row alone",
                )
            report.details = details
        finally:
            for alias in (ALIAS, OWNER_ALIAS, SCHEMA_ALIAS):
                if alias in connections:
                    connections[alias].close()
            connections.close_all()
            with owner.cursor() as cursor:
                for size in SIZES:
                    cursor.execute(f"DROP TABLE IF EXISTS {quote(f'{PREFIX}_t{size}')}")
                cursor.execute(f"DROP TABLE IF EXISTS {quote(f'{PREFIX}_rows')}")
                for schema in schemas:
                    cursor.execute(f"DROP SCHEMA IF EXISTS {quote(schema)} CASCADE")
                if own_secret:
                    cursor.execute(f"DROP FUNCTION IF EXISTS public.{quote(sql.VERIFY_FUNCTION)}"
                                   "(text)")
                    cursor.execute(f"DROP TABLE IF EXISTS public.{quote(sql.SECRET_TABLE)}")
                cursor.execute(f'DROP OWNED BY "{ROLE}"')
                cursor.execute(f'DROP ROLE "{ROLE}"')
        report.write(options.result)
    return 0


def _client_save() -> dict[str, float]:
    """Seconds to create one tenant of the example project: with its own schema, migrated
    (django-tenants' ``auto_create_schema``), and as a row alone. The public schema is
    migrated first; both tenants are deleted after."""
    from django.core.management import call_command
    from django.db import connection

    from example_project.customers.models import Client

    call_command("migrate_schemas", "--shared", verbosity=0)
    out = {}
    for kind, create_schema in (("schema-per-tenant", True), ("row-level", False)):
        client = Client(schema_name=f"{PREFIX}_{kind.replace('-', '_')}", name="bench")
        client.auto_create_schema = create_schema
        started = time.perf_counter()
        client.save(verbosity=0)
        out[kind] = round(time.perf_counter() - started, 4)
        connection.set_schema_to_public()
        client.delete(force_drop=create_schema)
    return out


if __name__ == "__main__":
    sys.exit(main())
