from django.db import connection
from django.http import Http404, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt

from example_project.billing.models import Invoice
from example_project.shop.models import Customer, Order
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


# A small JSON API over the same data: what a client of the SaaS calls.


def stats_json(request):
    """The dashboard figures (cached, invalidated by every customer and order write)."""
    return JsonResponse(dashboard_stats())


def customer_json(request, pk: int):
    """One customer and their order count (read by the router from a replica)."""
    customer = Customer.objects.filter(pk=pk).first()
    if customer is None:
        raise Http404("no such customer")
    return JsonResponse(
        {"id": customer.pk, "name": customer.name, "orders": customer.orders.count(),
         "db": customer._state.db}
    )


@csrf_exempt  # an API for programs, not a form in a browser session
def orders_json(request):
    """POST ``customer`` and ``total_cents``: a new order (201 with its id)."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    try:
        customer_id, total = int(request.POST["customer"]), int(request.POST["total_cents"])
    except (KeyError, ValueError):
        return JsonResponse({"error": "customer and total_cents must be integers"}, status=400)
    customer = Customer.objects.filter(pk=customer_id).first()
    if customer is None:
        raise Http404("no such customer")
    order = Order.objects.create(customer=customer, total_cents=total)
    return JsonResponse({"id": order.pk}, status=201)


def order_json(request, pk: int):
    order = Order.objects.filter(pk=pk).first()
    if order is None:
        raise Http404("no such order")
    return JsonResponse(
        {"id": order.pk, "customer": order.customer_id, "total_cents": order.total_cents,
         "db": order._state.db}
    )


def invoices_json(request):
    """The current tenant's invoice numbers from the shared, row-level billing table.

    ``?raw=1`` reads them with plain SQL and no tenant filter: only PostgreSQL's row-level
    policy keeps other tenants' rows out (when the application runs as an ordinary role).
    """
    if request.GET.get("raw"):
        with connection.cursor() as cursor:
            cursor.execute("SELECT tenant_id, number FROM billing_invoice ORDER BY number")
            rows = cursor.fetchall()
    else:
        rows = list(Invoice.objects.order_by("number").values_list("tenant_id", "number"))
    return JsonResponse({"invoices": [[tenant, number] for tenant, number in rows]})
