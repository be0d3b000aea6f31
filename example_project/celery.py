import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

app = Celery("example_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.autodiscover_tasks(["data_arch.caching"])
app.autodiscover_tasks(["data_arch.backfills"])
app.autodiscover_tasks(["data_arch"])  # data_arch.tasks: maintenance, warming, replica health

from data_arch.celery import beat_schedule  # noqa: E402 -- needs the settings module set above

# data_arch's maintenance on a schedule (intervals from DATA_ARCH["CELERY"]), plus the project's.
app.conf.beat_schedule = {**beat_schedule(), **(app.conf.beat_schedule or {})}
