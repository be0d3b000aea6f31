"""Writes are recognised however the statement reaches the connection."""

import pytest

from data_arch.routing import is_write


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("INSERT INTO t VALUES (1)", True),
        ("UPDATE t SET x = 1", True),
        ("CREATE TABLE t (id int)", True),
        ("SELECT 1", False),
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", True),
        # data_arch.tenancy sends the tenant setting in front of the statement, in one round trip
        ("SELECT set_config('data_arch.tenant_id', '7', true); INSERT INTO t VALUES (1)", True),
        ("SELECT set_config('data_arch.tenant_id', '7', true); SELECT * FROM t", False),
    ],
)
def test_is_write(sql, expected):
    assert is_write(sql) is expected
