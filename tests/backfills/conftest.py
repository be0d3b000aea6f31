import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.db import connections

import tests.backfills.definitions  # noqa: F401 -- registers the tests' backfills

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def committed(transactional_db):
    """Database access without a wrapping transaction: batches commit, other processes see them
    (the tables are flushed afterwards)."""
    from data_arch.backfills.models import BackfillCursor

    BackfillCursor.objects.using("default").all().delete()
    yield


def make_items(rows: int) -> None:
    """``bf_items`` with ``rows`` rows, every counter at 0."""
    with connections["default"].cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bf_items")
        cursor.execute(
            "CREATE TABLE bf_items (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0, "
            "grp int NOT NULL, pad text NOT NULL DEFAULT 'x')"
        )
        cursor.execute("CREATE INDEX bf_items_grp ON bf_items (grp)")
        cursor.execute(
            "INSERT INTO bf_items (id, grp) SELECT i, i %% 10 FROM generate_series(1, %s) i",
            [rows],
        )
        cursor.execute("ANALYZE bf_items")


def counters() -> dict[int, int]:
    """How many rows have each counter value."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT n, count(*) FROM bf_items GROUP BY n")
        return dict(cursor.fetchall())


@pytest.fixture
def items(committed):
    yield make_items
    with connections["default"].cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bf_items")


def _with_database(url: str, name: str) -> str:
    return urlsplit(url)._replace(path="/" + name).geturl()


def command_env() -> dict[str, str]:
    """Environment of a ``manage.py`` process on the test database."""
    env = dict(os.environ)
    name = connections["default"].settings_dict["NAME"]
    env["DATABASE_URL"] = _with_database(os.environ["DATABASE_URL"], name)
    if os.environ.get("REPLICA_URL"):
        env["REPLICA_URL"] = _with_database(os.environ["REPLICA_URL"], name)
    env["DJANGO_SETTINGS_MODULE"] = "tests.backfills.settings"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def manage(*args: str, **kwargs) -> subprocess.Popen:
    """Start ``manage.py`` with ``args`` on the test database."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env=command_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs,
    )
