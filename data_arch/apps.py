import importlib
import importlib.util

from django.apps import AppConfig

# Each capability keeps its system checks next to its code, in <capability>/checks.py.
CHECK_MODULES = (
    "data_arch.checks",
    "data_arch.tenancy.checks",
    "data_arch.partitioning.checks",
    "data_arch.routing.checks",
    "data_arch.caching.checks",
)


class DataArchConfig(AppConfig):
    name = "data_arch"
    verbose_name = "Data architecture"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Teach each PostgreSQL backend's schema editor to create partitioned parents.
        from data_arch.partitioning import schema

        schema.install()
        # Registering checks only: configuration errors are reported by them, never raised here.
        for module in CHECK_MODULES:
            package = module.rsplit(".", 1)[0]
            if package == "data_arch" or importlib.util.find_spec(package) is not None:
                if importlib.util.find_spec(module) is not None:
                    importlib.import_module(module)
