"""Wiring: every hook is installed by name from ready(), the statement wrappers run in one
declared order, and a project without the optional dependencies still works."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.db import connection

from data_arch import wiring
from data_arch.routing.failover import retry_reads
from data_arch.routing.writes import watch_writes
from data_arch.tenancy.rls import set_tenant

ROOT = Path(__file__).resolve().parent.parent

# A meta-path finder that makes the optional dependencies unimportable, as on a machine where
# `pip install django-data-arch` ran without extras.
BLOCK_EXTRAS = textwrap.dedent("""
    import sys
    BLOCKED = ("django_tenants", "celery", "django_prometheus", "prometheus_client", "kombu")
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None
    sys.meta_path.insert(0, _Block())
""")


def _python(code: str, settings: str = "tests.settings") -> subprocess.CompletedProcess:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": settings, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )


@pytest.mark.django_db
def test_the_wrappers_are_first_and_in_the_declared_order():
    connection.ensure_connection()
    assert connection.execute_wrappers[:3] == [watch_writes, retry_reads, set_tenant]
    assert list(wiring.WRAPPERS) == [watch_writes, retry_reads, set_tenant]


@pytest.mark.django_db
def test_installing_again_keeps_one_copy_and_a_callers_wrapper_stays_inner():
    def mine(execute, sql, params, many, context):
        return execute(sql, params, many, context)

    with connection.execute_wrapper(mine):
        wiring.install_wrappers(connection)
        wiring.install_wrappers(connection)
        assert connection.execute_wrappers == [*wiring.WRAPPERS, mine]
    assert connection.execute_wrappers == list(wiring.WRAPPERS)


def test_a_fresh_interpreter_that_only_runs_django_setup_fails_closed():
    # Nothing but django.setup(): no data_arch module imported by hand, so any guard that
    # depended on an incidental import would be missing here.
    result = _python(textwrap.dedent("""
        import django
        django.setup()
        from django.db import connection
        connection.ensure_connection()
        print([w.__qualname__ for w in connection.execute_wrappers])
        from django.apps import apps
        Account = apps.get_model("billing", "Account")
        try:
            list(Account.objects.all())
        except Exception as exc:
            print(type(exc).__name__)
        else:
            print("READ WITHOUT A TENANT")
    """))
    assert result.returncode == 0, result.stderr
    wrappers, outcome = result.stdout.strip().splitlines()[-2:]
    assert wrappers.startswith("['watch_writes', 'retry_reads', 'set_tenant'"), wrappers
    assert outcome == "NoTenantError", result.stdout


def test_a_project_with_only_the_router_and_cache_needs_no_extras_and_passes_check():
    result = _python(BLOCK_EXTRAS + textwrap.dedent("""
        import django
        django.setup()
        import data_arch, data_arch.routing, data_arch.caching, data_arch.tenancy
        from django.core.management import call_command
        call_command("check", fail_level="ERROR")
        for name in ("celery", "django_tenants", "django_prometheus"):
            assert name not in sys.modules, name
        try:
            import data_arch.caching.tasks
        except ImportError as exc:
            print("tasks:", exc)
        print("OK")
    """), settings="tests.minimal.settings")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout + result.stderr
    assert "tasks: data_arch.caching.tasks needs celery: pip install 'django-data-arch[celery]'" \
        in result.stdout
    assert result.stdout.strip().endswith("OK")
