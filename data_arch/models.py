"""data_arch's models: the record of every maintenance run (the dead man's switch reads it),
the admin's page models, and the backfill cursor (defined with its capability)."""

from __future__ import annotations

from django.db import models

from data_arch.backfills.models import BackfillCursor

__all__ = ["BackfillCursor", "CacheNamespace", "MaintenanceRun", "PartitionedTable",
           "ReplicaStatus", "TenantHealth"]


class MaintenanceRun(models.Model):
    """One run of one maintenance job for one tenant (or the shared data), whoever started it:
    a Celery task, a management command or a direct library call."""

    class Outcome(models.TextChoices):
        RUNNING = "running"
        OK = "ok"
        FAILED = "failed"
        SKIPPED = "skipped"

    #: ``partitions``, ``warm_caches``, ``replica_health`` ...
    job = models.CharField(max_length=64)
    #: The tenant's lookup value (schema name by default); empty for shared/public work.
    tenant = models.CharField(max_length=255, blank=True, default="")
    started_at = models.DateTimeField(db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=8, choices=Outcome.choices, default=Outcome.RUNNING)
    #: What the run did, JSON-able (e.g. ``{"created": 3, "dropped": 1}``).
    counts = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, default="")
    #: ``host:pid`` of the process, and the Celery task id when a task ran it.
    runner = models.CharField(max_length=255, blank=True, default="")
    task_id = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["job", "outcome", "-finished_at"], name="data_arch_run_job_idx")]

    def __str__(self) -> str:
        who = f" [{self.tenant}]" if self.tenant else ""
        return f"{self.job}{who} {self.outcome} at {self.started_at:%Y-%m-%d %H:%M:%S}"

    @property
    def duration(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class _Page(models.Model):
    """An admin page that is not a table: no rows are ever read or written through it; the
    model exists so the page has a place in the admin index and its own permissions."""

    class Meta:
        abstract = True
        managed = False
        default_permissions = ("view", "change")


class PartitionedTable(_Page):
    """Admin page: partitioned tables per schema, with plan and apply."""

    class Meta(_Page.Meta):
        db_table = "data_arch_page_partitions"
        verbose_name = "partitioned table"


class ReplicaStatus(_Page):
    """Admin page: each replica's health verdict in the web process."""

    class Meta(_Page.Meta):
        db_table = "data_arch_page_replicas"
        verbose_name = "replica"
        verbose_name_plural = "replicas"


class CacheNamespace(_Page):
    """Admin page: invalidate a tenant's (or the shared) cache namespace."""

    class Meta(_Page.Meta):
        db_table = "data_arch_page_cache"
        verbose_name = "cache namespace"


class TenantHealth(_Page):
    """Admin page: tenants and the partition health of their schemas."""

    class Meta(_Page.Meta):
        db_table = "data_arch_page_tenants"
        verbose_name = "tenant"
        verbose_name_plural = "tenants"
