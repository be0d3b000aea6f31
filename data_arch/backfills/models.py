"""The durable cursor of a backfill: one row per backfill, tenant and partition.

The row is advanced in the same transaction as the batch it records, so after a crash the
cursor and the table agree: the next run starts right after the last committed batch and no
batch is applied twice.
"""

from __future__ import annotations

from django.db import models

__all__ = ["BackfillCursor", "State"]


class State(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    FAILED = "failed"
    DONE = "done"


class BackfillCursor(models.Model):
    name = models.CharField(max_length=200)
    #: The tenant's key (schema name or ``id-<pk>``); empty for shared data.
    tenant = models.CharField(max_length=100, blank=True, default="")
    #: The partition worked through; empty for a table that is not partitioned.
    partition = models.CharField(max_length=63, blank=True, default="")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    #: The last key of the last committed batch (JSON: a number, or the key's text form).
    position = models.JSONField(null=True, blank=True)
    #: The largest key when the backfill started: rows added later are not its work (the code
    #: that adds them must already write what the backfill fills in).
    upper = models.JSONField(null=True, blank=True)
    rows_done = models.BigIntegerField(default=0)
    rows_estimated = models.BigIntegerField(null=True, blank=True)
    batches = models.IntegerField(default=0)
    batch_size = models.IntegerField(default=0)
    #: Seconds spent in runs so far (for the rate and the ETA).
    seconds = models.FloatField(default=0.0)
    throttled_seconds = models.FloatField(default=0.0)
    lock_timeouts = models.IntegerField(default=0)
    max_lag_bytes = models.BigIntegerField(default=0)
    #: What stopped the last run (the error and the batch it hit), if it failed.
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        app_label = "data_arch"
        db_table = "data_arch_backfill"
        constraints = [
            models.UniqueConstraint(
                fields=["name", "tenant", "partition"], name="data_arch_backfill_unique"
            )
        ]

    def __str__(self) -> str:
        where = "/".join(part for part in (self.tenant, self.partition) if part)
        return f"{self.name}{' @ ' + where if where else ''}: {self.state}"

    @property
    def rate(self) -> float | None:
        """Rows per second over the runs so far."""
        return self.rows_done / self.seconds if self.seconds > 0 else None

    @property
    def eta_seconds(self) -> float | None:
        rate = self.rate
        if not rate or self.rows_estimated is None or self.state == State.DONE:
            return None
        return max(self.rows_estimated - self.rows_done, 0) / rate
