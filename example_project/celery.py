import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

app = Celery("example_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.autodiscover_tasks(["data_arch.caching"])
app.autodiscover_tasks(["data_arch.backfills"])
app.autodiscover_tasks(["data_arch"])  # data_arch.tasks: maintenance, warming, replica health


@app.on_after_configure.connect
def _data_arch_schedule(sender, **kwargs):
    """data_arch's maintenance on a schedule (intervals from DATA_ARCH["CELERY"]), plus the
    project's. Computed once Celery reads its configuration, not at import: a settings module
    that imports this package (``from example_project.settings import *``) is not finished yet
    when this module runs, and the schedule would miss its DATA_ARCH."""
    from data_arch.celery import beat_schedule

    sender.conf.beat_schedule = {**beat_schedule(), **(sender.conf.beat_schedule or {})}
