"""Per-tenant activity events: a monthly-partitioned table kept for 13 months."""

from django.db import models

from data_arch.partitioning import MonthlyPartitioning


class Event(models.Model):
    class Kind(models.TextChoices):
        LOGIN = "login"
        ORDER_PLACED = "order_placed"
        PAGE_VIEW = "page_view"

    occurred_at = models.DateTimeField()
    kind = models.CharField(max_length=32, choices=Kind.choices)
    customer = models.ForeignKey("shop.Customer", null=True, blank=True, on_delete=models.SET_NULL)
    payload = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [MonthlyPartitioning(field="occurred_at", ahead=3, retain=13)]
        indexes = [models.Index(fields=["kind", "occurred_at"], name="event_kind_time")]
        ordering = ["-occurred_at"]

    def __str__(self) -> str:
        return f"{self.kind} at {self.occurred_at:%Y-%m-%d %H:%M}"
