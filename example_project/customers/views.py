from django.shortcuts import render

from example_project.customers.models import Client


def home(request):
    tenants = Client.objects.exclude(schema_name="public").prefetch_related("domains")
    return render(request, "public_home.html", {"tenants": tenants})
