from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "example_project.audit"
    default_auto_field = "django.db.models.BigAutoField"
