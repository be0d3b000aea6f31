import os

from celery import shared_task
from django.db import connection

from example_project.customers.models import Client


@shared_task
def ping() -> dict:
    """Answers from the worker: its pid, and the tenants it sees in the database."""
    return {
        "pid": os.getpid(),
        "schema": connection.schema_name,
        "tenants": sorted(Client.objects.values_list("schema_name", flat=True)),
    }
