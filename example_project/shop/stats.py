"""Dashboard figures, cached per tenant and invalidated by any write to customers or orders."""

from django.db.models import Count, Sum

from data_arch.caching import cached
from example_project.shop.models import Customer, Order


@cached(timeout=300, models=[Customer, Order], stale_ttl=60)
def dashboard_stats() -> dict:
    totals = Order.objects.aggregate(orders=Count("id"), revenue=Sum("total_cents"))
    return {
        "customers": Customer.objects.count(),
        "orders": totals["orders"],
        "revenue_cents": totals["revenue"] or 0,
        "by_status": list(
            Order.objects.values("status").annotate(n=Count("id")).order_by("status")
        ),
    }
