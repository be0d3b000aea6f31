from django.db import connection
from django.db.models import Count, Sum
from django.shortcuts import render

from example_project.shop.models import Customer, Order


def dashboard(request):
    totals = Order.objects.aggregate(orders=Count("id"), revenue=Sum("total_cents"))
    context = {
        "tenant": connection.tenant,
        "customers": Customer.objects.count(),
        "orders": totals["orders"],
        "revenue": (totals["revenue"] or 0) / 100,
        "by_status": Order.objects.values("status").annotate(n=Count("id")).order_by("status"),
    }
    return render(request, "dashboard.html", context)
