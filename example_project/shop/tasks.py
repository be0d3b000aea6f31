import os

from celery import shared_task
from django.db import connection

from data_arch.routing.celery import replica_or_retry
from example_project.customers.models import Client


@shared_task
def ping() -> dict:
    """Answers from the worker: its pid, and the tenants it sees in the database."""
    return {
        "pid": os.getpid(),
        "schema": connection.schema_name,
        "tenants": sorted(Client.objects.values_list("schema_name", flat=True)),
    }


@shared_task
def find_user(username: str) -> dict:
    """Looks a user up by the router's read choice: whether it was found and on which alias."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.filter(username=username).first()
    return {"found": user is not None, "db": user._state.db if user else None}


@shared_task
@replica_or_retry(delay=0.2, max_wait=10)
def find_user_on_a_replica(username: str) -> dict:
    """find_user, but waiting (by retrying) for a replica that has the sender's writes."""
    from celery import current_task
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.filter(username=username).first()
    return {
        "found": user is not None,
        "db": user._state.db if user else None,
        "retries": current_task.request.retries,
    }
