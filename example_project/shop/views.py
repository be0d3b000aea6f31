from django.db import connection
from django.shortcuts import render

from example_project.shop.stats import dashboard_stats


def dashboard(request):
    stats = dashboard_stats()
    context = {
        "tenant": connection.tenant,
        "customers": stats["customers"],
        "orders": stats["orders"],
        "revenue": stats["revenue_cents"] / 100,
        "by_status": stats["by_status"],
    }
    return render(request, "dashboard.html", context)
