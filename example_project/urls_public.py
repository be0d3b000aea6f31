from django.contrib import admin
from django.urls import path

from data_arch.prometheus import metrics_view

from example_project.customers import views

urlpatterns = [
    path("", views.home, name="home"),
    path("admin/", admin.site.urls),
    # data_arch's view: django-prometheus' metrics and data_arch's, multiprocess-correct.
    path("metrics", metrics_view, name="prometheus-django-metrics"),
]
