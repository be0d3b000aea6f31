"""A task for the multiprocess metrics test: one cache read in the worker process."""

from celery import shared_task

from data_arch.caching import get_or_load


@shared_task(name="tests.maintenance.cache_read")
def cache_read(key: str) -> int:
    return get_or_load(key, lambda: 1, 60)
