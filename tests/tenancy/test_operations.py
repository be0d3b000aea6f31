"""The migration operations are reversible and do what they say in the catalog."""

import pytest
from django.db import connection
from django.db.migrations.loader import MigrationLoader

from data_arch.tenancy.operations import EnableRowLevelSecurity, TenantKeys
from data_arch.tenancy.sql import KEY_COLUMNS, POLICY_NAME, TABLE_SECURITY

pytestmark = pytest.mark.django_db


def catalog(table):
    with connection.cursor() as cursor:
        cursor.execute(TABLE_SECURITY, [POLICY_NAME, table])
        enabled, forced, _owned, _owner, policy = cursor.fetchone()
        cursor.execute(KEY_COLUMNS, [table])
        keys = sorted((kind, cols) for _name, kind, cols, _target in cursor.fetchall())
    return (enabled, forced, policy), keys


def test_operations_reverse_and_reapply():
    state = MigrationLoader(connection).project_state(("billing", "0001_initial"))
    applied = catalog("billing_invoice")
    assert applied == (
        (True, True, True),
        [("f", ["tenant_id"]), ("f", ["tenant_id", "account_id"]), ("p", ["tenant_id", "id"]),
         ("u", ["tenant_id", "number"])],
    )
    with connection.schema_editor(atomic=True) as editor:
        EnableRowLevelSecurity("Invoice").database_backwards("billing", editor, state, state)
        TenantKeys("Invoice").database_backwards("billing", editor, state, state)
    assert catalog("billing_invoice") == (
        (False, False, False),
        [("f", ["tenant_id"]), ("p", ["id"]), ("u", ["tenant_id", "number"])],
    )
    with connection.schema_editor(atomic=True) as editor:
        TenantKeys("Invoice").database_forwards("billing", editor, state, state)
        EnableRowLevelSecurity("Invoice").database_forwards("billing", editor, state, state)
    assert catalog("billing_invoice") == applied


def test_sqlmigrate_shows_the_policy_sql():
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("sqlmigrate", "billing", "0001", stdout=out)
    sql = out.getvalue()
    assert 'FORCE ROW LEVEL SECURITY' in sql
    assert """= (SELECT "public"."data_arch_tenant_id"('data_arch.tenant_id'))::bigint""" in sql
    assert "SECURITY DEFINER" in sql
    assert 'PRIMARY KEY ("tenant_id", "id")' in sql
