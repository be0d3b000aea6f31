"""Optional dependencies, imported with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

#: module -> the ``django-data-arch[...]`` extra that provides it.
EXTRAS = {
    "celery": "celery",
    "django_tenants": "tenants",
    "django_prometheus": "prometheus",
    "prometheus_client": "prometheus",
}


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` or raise ImportError saying which extra ``feature`` needs."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = EXTRAS.get(module.partition(".")[0], module)
        raise ImportError(
            f"{feature} needs {module.partition('.')[0]}: pip install 'django-data-arch[{extra}]'"
        ) from exc
