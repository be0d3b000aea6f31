"""System checks: model keys, RLS on the tables, the application role."""

import pytest
from django.core import checks
from django.db import connections, models
from django.test.utils import isolate_apps

from data_arch.tenancy.checks import (
    check_application_role,
    check_tenant_models,
    check_tenant_tables,
    model_errors,
)

pytestmark = pytest.mark.django_db(databases="__all__")


def ids(messages):
    return sorted(m.id for m in messages)


def test_example_models_pass():
    assert [m for m in check_tenant_models() if m.id.startswith("data_arch.")] == []


@isolate_apps("example_project.billing")
def test_keys_without_the_tenant_are_errors():
    from data_arch.tenancy.models import TenantModel, tenant_unique
    from example_project.billing.models import Account

    class Ledger(TenantModel):
        code = models.CharField(max_length=8, unique=True)
        account = models.ForeignKey(Account, on_delete=models.CASCADE)
        tags = models.ManyToManyField("self")

        class Meta(TenantModel.Meta):
            app_label = "billing"
            constraints = [
                models.UniqueConstraint(fields=["account"], name="ledger_account_uniq"),
                tenant_unique("account", name="ledger_ok_uniq"),
            ]
            indexes = [models.Index(fields=["code"], name="ledger_code_idx")]

    class Plain(models.Model):
        account = models.ForeignKey(Account, on_delete=models.CASCADE)

        class Meta:
            app_label = "billing"

    messages = model_errors([Ledger, Plain])
    assert ids(messages) == [
        "data_arch.E101", "data_arch.E101", "data_arch.E102", "data_arch.E103",
        "data_arch.E104", "data_arch.W100",
    ]
    assert any("Ledger.code is unique=True" in m.msg for m in messages)
    assert any("Plain.account" in m.msg for m in messages)


def test_migrated_tables_have_forced_rls_and_tenant_keys():
    assert check_tenant_tables(databases=["default"]) == []


def test_a_table_without_forced_rls_is_reported():
    with connections["default"].cursor() as cursor:
        cursor.execute("ALTER TABLE billing_contact NO FORCE ROW LEVEL SECURITY")
        cursor.execute("DROP POLICY data_arch_tenant_isolation ON billing_contact")
    messages = check_tenant_tables(databases=["default"])
    assert ids(messages) == ["data_arch.W101"]
    assert "FORCE ROW LEVEL SECURITY, policy" in messages[0].msg


def test_a_primary_key_without_the_tenant_is_reported():
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "ALTER TABLE billing_invoice DROP CONSTRAINT billing_invoice_account_id_tenant_fk"
        )
    messages = check_tenant_tables(databases=["default"])
    assert ids(messages) == ["data_arch.W102"]
    assert "account_id" in messages[0].msg


def test_superuser_owner_role_is_warned_and_ordinary_role_is_not(app_role):
    assert ids(check_application_role(databases=["default"])) == [
        "data_arch.W103", "data_arch.W104", "data_arch.W105",
    ]
    assert check_application_role(databases=["app"]) == []


def test_deploy_checks_run_only_when_asked():
    registered = checks.registry.registry.get_checks(include_deployment_checks=False)
    assert check_application_role not in registered
    assert check_application_role in checks.registry.registry.get_checks(True)


@pytest.mark.parametrize(
    ("tenancy", "fragment"),
    [
        ({"RLS_SETTING": "tenant"}, "must be a custom PostgreSQL setting"),
        ({"RLS_SETTING": "x.y'; RESET ALL; --"}, "must be a custom PostgreSQL setting"),
        ({"LOOKUP_FIELD": ""}, "LOOKUP_FIELD'] must be a non-empty string"),
        ({"MODEL": 3}, "MODEL'] must be a non-empty string"),
    ],
)
def test_bad_tenancy_settings_are_named(tenancy, fragment):
    from django.test import override_settings

    from data_arch import conf

    with override_settings(DATA_ARCH={"TENANCY": tenancy}):
        errors = conf.configuration_errors()
    assert any(fragment in error for error in errors), errors


def test_a_tenant_schema_missing_a_tenant_app_table_is_an_error(tenant_schemas):
    from data_arch.tenancy.checks import check_tenant_schemas
    from example_project.customers.models import Client

    assert [m for m in check_tenant_schemas(databases=["default"])] == []
    gap = Client(schema_name="tenant_gap", name="Gap")
    gap.auto_create_schema = False
    gap.save()
    with connections["default"].cursor() as cursor:
        cursor.execute("CREATE SCHEMA tenant_gap")
        cursor.execute("CREATE TABLE tenant_gap.shop_customer (LIKE tenant_a.shop_customer)")
    (message,) = check_tenant_schemas(databases=["default"])
    assert message.id == "data_arch.E105"
    assert "'tenant_gap'" in message.msg and "shop_order" in message.msg
    assert "shop_customer," not in message.msg and "public" in message.msg


def test_a_tenant_schema_missing_a_table_public_also_has_is_an_error_of_check_database(
    tenant_schemas,
):
    """The fallback that really happens: an app in both SHARED_APPS and TENANT_APPS has its
    table in public too, so a tenant schema without it reads public's rows (every tenant's)."""
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    from data_arch.tenancy import Tenant, tenant_context
    from data_arch.tenancy.checks import check_tenant_schemas
    from example_project.customers.models import Client

    gap = Client(schema_name="tenant_no_ct", name="No content types")
    gap.auto_create_schema = False
    gap.save()
    with connections["default"].cursor() as cursor:
        cursor.execute("CREATE SCHEMA tenant_no_ct")
        cursor.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'tenant_a' "
            "AND tablename <> 'django_content_type'"
        )
        for (table,) in cursor.fetchall():
            cursor.execute(f'CREATE TABLE tenant_no_ct."{table}" (LIKE tenant_a."{table}")')
        cursor.execute("SELECT count(*) FROM public.django_content_type")
        public_rows = cursor.fetchone()[0]
    with tenant_context(Tenant(pk=gap.pk, schema_name="tenant_no_ct")):
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT count(*) FROM django_content_type")
            assert cursor.fetchone()[0] == public_rows > 0  # the fallback, for real
    (message,) = check_tenant_schemas(databases=["default"])
    assert message.id == "data_arch.E105"
    assert "'tenant_no_ct'" in message.msg and "django_content_type" in message.msg
    with pytest.raises(SystemCheckError, match="data_arch.E105") as raised:
        call_command("check", "--database", "default")
    assert "tenant_no_ct" in str(raised.value)


def test_django_tenants_sending_search_path_before_every_query_is_a_deploy_warning(settings):
    settings.TENANT_LIMIT_SET_CALLS = False
    found = [m for m in checks.run_checks(include_deployment_checks=True) if m.id == "data_arch.W107"]
    assert len(found) == 1
    assert "'default'" in found[0].msg and "TENANT_LIMIT_SET_CALLS" in found[0].hint
    settings.TENANT_LIMIT_SET_CALLS = True  # what the example project sets
    assert "data_arch.W107" not in {
        m.id for m in checks.run_checks(include_deployment_checks=True)
    }
