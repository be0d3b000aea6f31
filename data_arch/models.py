"""data_arch's own table: the record of every maintenance run (the dead man's switch reads it)."""

from __future__ import annotations

from django.db import models


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
