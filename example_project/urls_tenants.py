from django.contrib import admin
from django.urls import path

from data_arch.prometheus import metrics_view

from example_project.shop import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("api/stats", views.stats_json, name="api-stats"),
    path("api/customers/<int:pk>", views.customer_json, name="api-customer"),
    path("api/orders", views.orders_json, name="api-orders"),
    path("api/orders/<int:pk>", views.order_json, name="api-order"),
    path("api/invoices", views.invoices_json, name="api-invoices"),
    path("admin/", admin.site.urls),
    # data_arch's view: django-prometheus' metrics and data_arch's, multiprocess-correct.
    path("metrics", metrics_view, name="prometheus-django-metrics"),
]
