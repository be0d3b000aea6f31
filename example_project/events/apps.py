from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "example_project.events"
    default_auto_field = "django.db.models.BigAutoField"
