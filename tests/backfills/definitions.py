"""Backfills the tests run, on the table ``bf_items`` that the tests create.

``bf_items.n`` counts how often a row was processed: after a backfill every row must have n = 1.
"""

import time

from data_arch.backfills import register_backfill

COUNT = "UPDATE {table} SET n = n + 1 WHERE id = ANY(%(keys)s)"

register_backfill("bf_counter", table="bf_items", batch_sql_or_callable=COUNT,
                  description="count every row once")


def slow_count(batch):
    """Count the batch's rows, then hold the transaction a little (a kill lands mid-batch)."""
    batch.cursor.execute(COUNT.replace("{table}", batch.table), {"keys": batch.keys})
    time.sleep(0.03)


register_backfill("bf_slow_counter", table="bf_items", batch_sql_or_callable=slow_count,
                  batch_size=200)


def fragile(batch):
    """Count the rows, then fail if one of them is marked 'poison' (after its rows changed)."""
    batch.cursor.execute(COUNT.replace("{table}", batch.table), {"keys": batch.keys})
    batch.cursor.execute(f"SELECT id FROM {batch.table} WHERE id = ANY(%s) AND pad = 'poison'",
                         [batch.keys])
    poisoned = batch.cursor.fetchall()
    if poisoned:
        raise ValueError(f"row {poisoned[0][0]} is poisoned")


register_backfill("bf_fragile", table="bf_items", batch_sql_or_callable=fragile, batch_size=100)
register_backfill("bf_unindexed", table="bf_items", key="pad", batch_sql_or_callable=COUNT)
register_backfill("bf_not_unique", table="bf_items", key="grp", batch_sql_or_callable=COUNT)
register_backfill("bf_parted", table="bf_parted", batch_sql_or_callable=COUNT)
