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
    "data_arch.maintenance.checks",
    "data_arch.backfills.checks",
)


class DataArchConfig(AppConfig):
    name = "data_arch"
    verbose_name = "Data architecture"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from data_arch import wiring

        # Every hook, by name: statement wrappers in their declared order, signals, the
        # schema-editor hook. Configuration errors are reported by checks, never raised here.
        wiring.install()
        for module in CHECK_MODULES:
            importlib.import_module(module)
