"""Row-Level Security overhead through the ORM: no policy vs the plain setting vs the signed one.

    python bench/rls_context.py [--quick]   # starts a throwaway PostgreSQL

One indexed tenant query (an invoice by number: the ``(tenant_id, number)`` unique index) and one
partial-index range (a tenant's open invoices by due date), each run through the ORM inside
``tenant_context`` as

1. the table owner, which Row-Level Security does not apply to (the ORM's tenant filter only);
2. an ordinary role under the plain policy (``tenant_id = nullif(current_setting(...), '')``);
3. the same role under the signed policy (``tenant_id = (SELECT data_arch_tenant_id(...))``,
   a SECURITY DEFINER function that verifies the MAC; ``TENANCY.SIGNED_CONTEXT``).

The three run interleaved in rounds on one server; the table reports the median per query and
the ratios to the owner's time (target: RLS on within 1.1 x of off, the signed policy -- the
default -- and the plain one alike). 50 tenants x 2,000 invoices (``--quick``: 20 x 500). The
example project's tables are migrated; the rows, tenants and role made here are removed at the
end.
"""

from __future__ import annotations

import datetime
import statistics
import sys
import time

from _common import Report, arguments, django_setup
from _common import services as bench_services

TENANTS, INVOICES_PER_TENANT, ROUNDS, QUERIES_PER_ROUND = 50, 2000, 15, 200
ROLE = "data_arch_bench_app"


def _setup():
    from django.core.management import call_command
    from django.db import connections

    from data_arch.tenancy import tenant_context
    from example_project.billing.models import Account, Invoice
    from example_project.customers.models import Client

    call_command("migrate", verbosity=0)
    tenants = []
    for n in range(TENANTS):
        client = Client(schema_name=f"bench_rls_{n}", name=f"bench {n}")
        client.auto_create_schema = False
        client.save()
        tenants.append(client)
    day = datetime.date(2026, 1, 1)
    for client in tenants:
        with tenant_context(client):
            account = Account.objects.create(name="a", email=f"a@{client.pk}.com")
            Invoice.objects.bulk_create(
                Invoice(account=account, number=f"N{i}", total_cents=i,
                        status="open" if i % 10 == 0 else "paid", issued_on=day,
                        due_on=day + datetime.timedelta(days=i % 365))
                for i in range(INVOICES_PER_TENANT)
            )
    with connections["default"].cursor() as cursor:
        cursor.execute(f'DROP ROLE IF EXISTS "{ROLE}"')
        cursor.execute(f'CREATE ROLE "{ROLE}" LOGIN NOSUPERUSER NOBYPASSRLS')
        cursor.execute(f'GRANT USAGE ON SCHEMA public TO "{ROLE}"')
        cursor.execute(
            f'GRANT SELECT ON billing_account, billing_invoice, customers_client TO "{ROLE}"'
        )
        cursor.execute("ANALYZE billing_invoice")
    connections.settings["app"] = {**connections["default"].settings_dict, "USER": ROLE,
                                   "PASSWORD": ""}
    return tenants


def _policy(signed: bool) -> None:
    from django.db import connections

    from data_arch.tenancy import sql

    quote = connections["default"].ops.quote_name
    function = f"{quote('public')}.{quote(sql.VERIFY_FUNCTION)}" if signed else None
    predicate = sql.tenant_predicate(quote, "tenant_id", "bigint", function)
    with connections["default"].cursor() as cursor:
        cursor.execute(
            f"ALTER POLICY {quote(sql.POLICY_NAME)} ON billing_invoice USING ({predicate}) "
            f"WITH CHECK ({predicate})", ["data_arch.tenant_id", "data_arch.tenant_id"],
        )


def _round(alias: str, tenants, query) -> float:
    from data_arch.tenancy import tenant_context

    start = time.perf_counter()
    for i in range(QUERIES_PER_ROUND):
        with tenant_context(tenants[i % len(tenants)]):
            query(alias, i)
    return (time.perf_counter() - start) / QUERIES_PER_ROUND * 1e6


def by_number(alias: str, i: int) -> None:
    from example_project.billing.models import Invoice

    assert Invoice.objects.using(alias).get(number=f"N{i % INVOICES_PER_TENANT}")


def open_due(alias: str, i: int) -> None:
    from example_project.billing.models import Invoice

    day = datetime.date(2026, 1, 1) + datetime.timedelta(days=i % 300)
    list(Invoice.objects.using(alias).filter(status="open", due_on__gte=day).order_by("due_on")[:20])


def spread(values: list[float]) -> float:
    """Interquartile range of the rounds, in % of their median: how noisy the machine was."""
    q1, _, q3 = statistics.quantiles(values, n=4)
    return round(100 * (q3 - q1) / statistics.median(values), 1)


def _cleanup(tenants) -> None:
    """Remove the rows, tenants and role made here (the owner bypasses RLS: it is superuser)."""
    from django.db import connections

    ids = [client.pk for client in tenants]
    connections["app"].close()
    with connections["default"].cursor() as cursor:
        cursor.execute("DELETE FROM billing_invoice WHERE tenant_id = ANY(%s)", [ids])
        cursor.execute("DELETE FROM billing_account WHERE tenant_id = ANY(%s)", [ids])
        cursor.execute("DELETE FROM customers_client WHERE id = ANY(%s)", [ids])
        cursor.execute(f'DROP OWNED BY "{ROLE}"')
        cursor.execute(f'DROP ROLE "{ROLE}"')
    _policy(True)  # the migrated (signed) policy back


def main() -> int:
    global TENANTS, INVOICES_PER_TENANT, ROUNDS, QUERIES_PER_ROUND
    options = arguments(__doc__)
    if options.quick:
        TENANTS, INVOICES_PER_TENANT, ROUNDS, QUERIES_PER_ROUND = 20, 500, 6, 100
    report = Report("rls_context", "Row-Level Security on vs off (plain and signed policy)",
                    options.quick)

    with bench_services(replica=False):
        django_setup()
        from django.conf import settings
        from django.test import override_settings

        tenants = _setup()
        variants = [
            ("owner, no policy applies", "default", True),
            ("ordinary role, plain setting", "app", False),
            ("ordinary role, signed setting", "app", True),
        ]
        print(f"{TENANTS} tenants x {INVOICES_PER_TENANT} invoices; {ROUNDS} rounds of "
              f"{QUERIES_PER_ROUND} queries; median microseconds per query (ORM, tenant_context)")
        details: dict = {"tenants": TENANTS, "invoices_per_tenant": INVOICES_PER_TENANT,
                         "rounds": ROUNDS, "queries_per_round": QUERIES_PER_ROUND}
        try:
            for name, query in (("invoice by number (unique index)", by_number),
                                ("open invoices by due date (partial index)", open_due)):
                times: dict[str, list[float]] = {v[0]: [] for v in variants}
                for round_number in range(ROUNDS + 1):  # the first round warms up, dropped
                    for label, alias, signed in variants:
                        tenancy = {**settings.DATA_ARCH.get("TENANCY", {}),
                                   "SIGNED_CONTEXT": signed}
                        with override_settings(DATA_ARCH={**settings.DATA_ARCH,
                                                          "TENANCY": tenancy}):
                            if alias == "app":
                                _policy(signed)
                            took = _round(alias, tenants, query)
                        if round_number:
                            times[label].append(took)
                medians = {label: statistics.median(values) for label, values in times.items()}
                base = medians[variants[0][0]]
                plain = medians[variants[1][0]]
                signed = medians[variants[2][0]]
                print(f"\n{name}")
                for label, median in medians.items():
                    print(f"  {label:<32} {median:8.1f} us   {median / base:5.2f}x owner")
                print(f"  {'signed / plain':<32} {signed / plain:8.2f}x")
                spreads = {label: spread(values) for label, values in times.items()}
                details[name] = {label: round(median, 2) for label, median in medians.items()}
                details[f"{name}: rounds spread %"] = spreads
                for label, value in ((variants[1][0], plain), (variants[2][0], signed)):
                    policy = "signed" if "signed" in label else "plain"
                    row = report.add(
                        f"{name}: RLS on ({policy} policy) vs off", "us", round(value, 1),
                        "the table owner (no policy applies)", round(base, 1),
                        target=("<=", 1.1), target_text="≤ 1.1 ×",
                        note="signed is the default" if policy == "signed" else
                        f"signed / plain {signed / plain:.2f} ×",
                    )
                    if not row.met:
                        row.note += (
                            f"; rounds spread {spreads[label]} % vs the owner's "
                            f"{spreads[variants[0][0]]} % (interquartile range)"
                            + ("; the signed policy calls data_arch_tenant_id(), a SECURITY "
                               "DEFINER PL/pgSQL function (an HMAC check), once per statement"
                               if policy == "signed" else "")
                        )
        finally:
            _cleanup(tenants)
        report.details = details
        report.write(options.result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
