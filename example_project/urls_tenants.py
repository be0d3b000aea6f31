from django.contrib import admin
from django.urls import include, path

from example_project.shop import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("admin/", admin.site.urls),
    path("", include("django_prometheus.urls")),
]
