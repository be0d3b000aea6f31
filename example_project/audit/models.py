"""A platform-wide audit log in the public schema, partitioned monthly and archived after a year."""

from django.conf import settings
from django.db import models

from data_arch.partitioning import MonthlyPartitioning


class AuditEntry(models.Model):
    at = models.DateTimeField()
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    tenant_schema = models.CharField(max_length=63, blank=True)
    action = models.CharField(max_length=64)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [MonthlyPartitioning(field="at", ahead=2, retain=12, mode="archive")]
        indexes = [models.Index(fields=["tenant_schema", "at"], name="audit_tenant_time")]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.action} at {self.at:%Y-%m-%d %H:%M}"
