from django.apps import AppConfig


class DataArchConfig(AppConfig):
    name = "data_arch"
    verbose_name = "Data architecture"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the system checks; configuration errors are reported there, not raised here.
        from data_arch import checks  # noqa: F401
